"""Durable, at-least-once delivery of final reports to an orchestrator.

A report is written to SQLite before any attempt to send it and stays there until the
orchestrator answers 2xx (``delivered``), refuses it with a non-retryable status, or the deadline
passes (``abandoned``). A background loop sends due reports with bounded concurrency through one
aiohttp session; it sleeps until the next report is due or until something is submitted. After a
crash, :meth:`Outbox.start` picks every pending row up again; each row carries the same
``Idempotency-Key`` on every attempt, so the orchestrator can drop duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import structlog

from aftd.config import ReportsConfig
from aftd.errors import AftdError
from aftd.redact import scrub
from aftd.report.policy import Outcome, classify, parse_retry_after, schedule_retry
from aftd.report.store import OutboxRow, OutboxStore

__all__ = ["Outbox", "SecretResolver"]

log = structlog.get_logger(__name__)

_ERROR_SNIPPET = 200


class SecretResolver(Protocol):
    async def get(self, name: str) -> str: ...


class _Attempt:
    """What one POST produced: an HTTP status (with Retry-After) or a transport error."""

    def __init__(self, status: int | None = None, error: str | None = None,
                 retry_after: float | None = None) -> None:
        self.status = status
        self.error = error
        self.retry_after = retry_after

    @property
    def outcome(self) -> Outcome:
        return Outcome.RETRY if self.status is None else classify(self.status)


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def _describe(exc: BaseException, timeout_s: float) -> str:
    """A short, secret-free description of a transport failure (no URL, no headers)."""
    if isinstance(exc, TimeoutError):
        return f"timed out after {timeout_s:g}s"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect: {exc.os_error.strerror or type(exc.os_error).__name__}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server disconnected"
    if isinstance(exc, AftdError):  # from the secret resolver: names the secret, not the value
        return f"token unavailable: {scrub(str(exc))}"
    return f"{type(exc).__name__}: {scrub(str(exc))}"[:_ERROR_SNIPPET]


class Outbox:
    """The daemon's report outbox; see the module docstring."""

    def __init__(self, db_path: Path, cfg: ReportsConfig, secrets: SecretResolver, *,
                 ca_file: Path | None = None, max_in_flight: int = 32,
                 clock: Callable[[], float] = time.time,
                 on_outcome: Callable[[str], None] | None = None) -> None:
        self._db_path = db_path
        # Told "delivered", "retry" or "abandoned" after each attempt (metrics).
        self._on_outcome = on_outcome
        self._cfg = cfg
        self._secrets = secrets
        self._ca_file = ca_file
        self._max_in_flight = max(1, max_in_flight)
        self._clock = clock
        self._store: OutboxStore | None = None
        self._session: aiohttp.ClientSession | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._in_flight: dict[int, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, then deliver everything still pending (also from before a crash)."""
        if self._store is not None:
            raise RuntimeError("Outbox already started")
        self._store = OutboxStore(self._db_path)
        ssl_ctx = ssl.create_default_context(cafile=str(self._ca_file) if self._ca_file else None)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._max_in_flight, ssl=ssl_ctx),
            timeout=aiohttp.ClientTimeout(total=self._cfg.timeout_s),
        )
        log.info("outbox_started", pending=self._store.count("pending"),
                 intents=self._store.count("intent"))
        self._loop_task = asyncio.create_task(self._run(), name="aftd-outbox")

    async def aclose(self, flush_timeout_s: float = 5.0) -> None:
        """Give due reports ``flush_timeout_s`` to go out, then stop; the rest stay durable."""
        if self._store is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained(), flush_timeout_s)
        tasks = [t for t in (self._loop_task, *self._in_flight.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._in_flight.clear()
        if self._session is not None:
            await self._session.close()
        left = self._store.count("pending")
        self._store.close()
        self._store = self._session = self._loop_task = None
        log.info("outbox_stopped", pending=left)

    async def _drained(self) -> None:
        while self._in_flight or self._store_().due(self._clock(), 1):
            self._progress.clear()
            await self._progress.wait()

    def use_secrets(self, secrets: SecretResolver) -> None:
        """Resolve tokens through ``secrets`` from now on (after a config reload replaced the
        secret chain: the old one is closed and would fail every later attempt)."""
        self._secrets = secrets
        self._wake.set()

    # -- recording -------------------------------------------------------------------------

    def record_intent(self, job_id: str, *, url: str, token_secret: str | None,
                      failure_body: Mapping[str, Any], idempotency_key: str) -> int:
        """Durably record that ``job_id`` owes a final report; returns the report id."""
        report_id = self._store_().add_intent(job_id, url, token_secret, failure_body,
                                              idempotency_key, self._clock())
        log.info("report_intent_recorded", job_id=job_id, report_id=report_id)
        return report_id

    def submit(self, report_id: int, body: Mapping[str, Any]) -> None:
        """Fix the report's body (durably) and queue it for prompt delivery."""
        store = self._store_()
        if store.submit(report_id, body, self._clock()):
            row = store.get(report_id)
            log.info("report_submitted", job_id=row.job_id if row else None, report_id=report_id)
            self._wake.set()
            return
        row = store.get(report_id)
        if row is None:
            raise AftdError(f"unknown report id {report_id}")
        # Already released or sent: exactly one report per intent, so the late body is dropped.
        log.warning("report_already_fixed", job_id=row.job_id, report_id=report_id,
                    state=row.state)

    def release_job(self, job_id: str) -> int:
        """The job ended: its unsubmitted intents become pending ``failure_body`` reports."""
        n = self._store_().release(job_id, self._clock())
        if n:
            log.warning("report_intent_released", job_id=job_id, count=n)
            self._wake.set()
        return n

    def release_all_intents(self) -> int:
        """At start-up no job runs, so every leftover intent is owed as a failure report."""
        n = self._store_().release(None, self._clock())
        if n:
            log.warning("report_intents_released_at_startup", count=n)
            self._wake.set()
        return n

    def prune(self, before: float) -> int:
        """Forget delivered and abandoned reports created before ``before`` (a Unix time);
        pending reports and intents are never pruned."""
        n = self._store_().prune(before)
        if n:
            log.info("reports_pruned", count=n)
        return n

    # -- queries ---------------------------------------------------------------------------

    def job_report(self, job_id: str) -> dict[str, Any] | None:
        """Delivery state of the job's (latest) report, for ``GET /v1/jobs/{id}``."""
        row = self._store_().latest_for_job(job_id)
        if row is None:
            return None
        return {
            "state": row.state,
            "attempts": row.attempts,
            "lastError": row.last_error,
            "lastStatus": row.last_status,
            "deliveredAt": _iso(row.delivered_at),
            "nextAttemptAt": _iso(row.next_at) if row.state == "pending" else None,
            "idempotencyKey": row.idempotency_key,
        }

    def depth(self) -> int:
        """Reports waiting for delivery."""
        return self._store_().count("pending")

    def counts(self) -> dict[str, int]:
        """Rows per state (intent, pending, delivered, abandoned), e.g. for metrics."""
        return self._store_().counts()

    def _store_(self) -> OutboxStore:
        if self._store is None:
            raise RuntimeError("Outbox is not started")
        return self._store

    # -- delivery loop -------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            self._wake.clear()  # before looking, so a submit during this pass is not missed
            try:
                timeout = self._dispatch_due()
            except Exception:  # a locked or broken DB must not end delivery for good
                log.exception("outbox_loop_error")
                timeout = 1.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _dispatch_due(self) -> float | None:
        """Start sends for due rows within the concurrency bound; return seconds to sleep."""
        store = self._store_()
        now = self._clock()
        free = self._max_in_flight - len(self._in_flight)
        if free > 0:
            for row in store.due(now, free + len(self._in_flight)):
                if row.id in self._in_flight:
                    continue
                self._in_flight[row.id] = asyncio.create_task(self._deliver(row))
                free -= 1
                if free == 0:
                    break
        nxt = store.next_due_after(now)
        return None if nxt is None else max(0.0, nxt - self._clock())

    async def _deliver(self, row: OutboxRow) -> None:
        try:
            attempt = await self._post(row)
            self._record(row, attempt)
        except asyncio.CancelledError:
            raise
        except Exception:  # bookkeeping failed; the row stays pending and is tried again
            log.exception("report_delivery_error", job_id=row.job_id, report_id=row.id)
        finally:
            self._in_flight.pop(row.id, None)
            self._wake.set()
            self._progress.set()

    async def _post(self, row: OutboxRow) -> _Attempt:
        assert self._session is not None
        assert row.body is not None
        headers = {"Content-Type": "application/json", "Idempotency-Key": row.idempotency_key}
        try:
            if row.token_secret:
                # Resolved per attempt and never stored: a rotated token is picked up on retry.
                headers["Authorization"] = f"Bearer {await self._secrets.get(row.token_secret)}"
            async with self._session.post(row.url, data=row.body.encode(), headers=headers,
                                          allow_redirects=False) as resp:
                text = "" if 200 <= resp.status < 300 else await resp.text(errors="replace")
                return _Attempt(
                    status=resp.status,
                    error=None if 200 <= resp.status < 300 else _http_error(resp, text),
                    retry_after=parse_retry_after(resp.headers.get("Retry-After"),
                                                  self._clock()))
        except (aiohttp.ClientError, TimeoutError, OSError, AftdError) as exc:
            return _Attempt(error=_describe(exc, self._cfg.timeout_s))

    def _record(self, row: OutboxRow, attempt: _Attempt) -> None:
        outcome = self._store_outcome(row, attempt)
        if self._on_outcome is not None:
            self._on_outcome(outcome)

    def _store_outcome(self, row: OutboxRow, attempt: _Attempt) -> str:
        store = self._store_()
        n = row.attempts + 1
        now = self._clock()
        outcome = attempt.outcome
        if outcome is Outcome.DELIVERED:
            store.finish(row.id, "delivered", n, attempt.status, None, now)
            log.info("report_delivered", job_id=row.job_id, attempts=n, status=attempt.status)
            return "delivered"
        if outcome is Outcome.RETRY:
            sched = schedule_retry(attempt=n, now=now, pending_at=row.pending_at or now,
                                   cfg=self._cfg, retry_after=attempt.retry_after)
            if sched.next_at is not None:
                store.retry_later(row.id, n, attempt.status, attempt.error, sched.next_at)
                log.warning("report_retry_scheduled", job_id=row.job_id, attempts=n,
                            status=attempt.status, error=attempt.error,
                            delay_s=round(sched.delay_s, 3))
                return "retry"
        reason = attempt.error if outcome is Outcome.ABANDON else \
            f"deadline passed; last error: {attempt.error}"
        store.finish(row.id, "abandoned", n, attempt.status, reason, now)
        log.error("report_abandoned", job_id=row.job_id, attempts=n, status=attempt.status,
                  error=reason)
        return "abandoned"


def _http_error(resp: aiohttp.ClientResponse, text: str) -> str:
    snippet = " ".join(text.split())[:_ERROR_SNIPPET]
    reason = resp.reason or ""
    return scrub(f"HTTP {resp.status} {reason}".rstrip() + (f": {snippet}" if snippet else ""))
