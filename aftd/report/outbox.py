"""Durable, at-least-once delivery of final reports to an orchestrator.

A report is written to SQLite before any attempt to send it and stays there until the
orchestrator answers 2xx (``delivered``), refuses it with a non-retryable status, or the deadline
passes (``abandoned``). The delivery loop (:mod:`aftd.report.delivery`) sends due reports with
bounded concurrency through one aiohttp session; it sleeps until the next report is due or until
something is submitted. After a crash, :meth:`Outbox.start` picks every pending row up again;
each row carries the same ``Idempotency-Key`` on every attempt, so the orchestrator can drop
duplicates.

The same loop carries other kinds of rows (pushed notifications) as further channels
(:meth:`Outbox.add_channel`), each in a store of its own: one outbox, one retry policy.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from aftd.config import ReportsConfig
from aftd.errors import AftdError
from aftd.report.delivery import Channel, Deliverer, Request
from aftd.report.storage import OutboxStorage
from aftd.report.store import OutboxRow, OutboxStore
from aftd.secrets.base import SecretResolver

__all__ = ["Outbox", "ReportNotRetryable", "UnknownReport"]

log = structlog.get_logger(__name__)

# Told about a report given up on (the job id, the report's delivery state as the API shows
# it); pushed notifications of ``report.abandoned`` hang off it.
AbandonHook = Callable[[str, dict[str, Any]], Awaitable[None]]


class UnknownReport(AftdError):
    """No report has this id (or it was pruned)."""


class ReportNotRetryable(AftdError):
    """Only pending and abandoned reports can be retried."""


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


class Outbox:
    """The daemon's report outbox; see the module docstring."""

    def __init__(self, db_path: Path, cfg: ReportsConfig, secrets: SecretResolver, *,
                 ca_file: Path | None = None, max_in_flight: int = 32,
                 clock: Callable[[], float] = time.time,
                 on_outcome: Callable[[str], None] | None = None,
                 on_abandoned: AbandonHook | None = None,
                 busy_timeout_s: float = 10.0, store: OutboxStorage | None = None) -> None:
        # ``store``: the outbox's storage (a fleet's shared database); None: SQLite at db_path.
        self._given_store = store
        self._db_path = db_path
        self._busy_timeout_s = busy_timeout_s
        self._cfg = cfg
        self._ca_file = ca_file
        self._max_in_flight = max(1, max_in_flight)
        self._clock = clock
        self._store: OutboxStorage | None = None
        self._session: aiohttp.ClientSession | None = None
        self._deliverer = Deliverer(cfg, secrets, max_in_flight=self._max_in_flight,
                                    clock=clock)
        # Told "delivered", "retry" or "abandoned" after each attempt (metrics).
        self._on_outcome = on_outcome
        self.on_abandoned = on_abandoned
        # Jobs of this process that recorded (or began to record) an intent, and the owners of
        # intents not fixed yet: a job that never recorded one needs no look at the store when
        # it ends, and a submit needs no read to name its job. (At start-up every intent left
        # by an earlier process is released, so these need not survive a restart.)
        self._intending: set[str] = set()
        self._owners: dict[int, str] = {}

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, then deliver everything still pending (also from before a crash)."""
        if self._store is not None:
            raise RuntimeError("Outbox already started")
        store = self._given_store or OutboxStore(self._db_path,
                                                 busy_timeout_s=self._busy_timeout_s)
        try:
            await store.open()
        except BaseException:
            await store.close()
            raise
        self._store = store
        self._deliverer.add(_ReportChannel(self, store))
        ssl_ctx = ssl.create_default_context(cafile=str(self._ca_file) if self._ca_file else None)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._max_in_flight, ssl=ssl_ctx),
            timeout=aiohttp.ClientTimeout(total=self._cfg.timeout_s),
        )
        log.info("outbox_started", pending=store.open_count("pending"),
                 intents=store.open_count("intent"))
        self._deliverer.start(self._session)

    async def aclose(self, flush_timeout_s: float = 5.0) -> None:
        """Give due rows ``flush_timeout_s`` to go out, then stop; the rest stay durable."""
        if self._store is None:
            return
        await self._deliverer.aclose(flush_timeout_s)
        if self._session is not None:
            await self._session.close()
        left = self._store.open_count("pending")
        await self._store.close()
        self._store = self._session = None
        log.info("outbox_stopped", pending=left)

    def add_channel(self, channel: Channel[Any]) -> None:
        """Deliver ``channel``'s rows too (pushed notifications), through the same loop."""
        self._deliverer.add(channel)

    def wake(self) -> None:
        """A row of some channel became due: look at once."""
        self._deliverer.wake()

    def use_secrets(self, secrets: SecretResolver) -> None:
        """Resolve tokens through ``secrets`` from now on (after a config reload replaced the
        secret chain: the old one is closed and would fail every later attempt)."""
        self._deliverer.secrets = secrets
        self._deliverer.wake()

    async def _settled(self, row: OutboxRow, outcome: str) -> None:
        if self._on_outcome is not None:
            self._on_outcome(outcome)
        if outcome == "abandoned" and self.on_abandoned is not None:
            fresh = await self._store_().get(row.id)
            if fresh is not None:
                await self.on_abandoned(row.job_id, _listed(fresh))

    # -- recording -------------------------------------------------------------------------

    async def record_intent(self, job_id: str, *, url: str, token_secret: str | None,
                            failure_body: Mapping[str, Any], idempotency_key: str) -> int:
        """Durably record that ``job_id`` owes a final report; returns the report id."""
        self._intending.add(job_id)  # before the write: it may commit and its caller be cancelled
        report_id = await self._store_().add_intent(job_id, url, token_secret, failure_body,
                                                    idempotency_key, self._clock())
        self._owners[report_id] = job_id
        log.info("report_intent_recorded", job_id=job_id, report_id=report_id)
        return report_id

    async def void_intent(self, report_id: int) -> bool:
        """The claim this intent was recorded for never took effect: no report is owed."""
        voided = await self._store_().void_intent(report_id)
        self._owners.pop(report_id, None)
        if voided:
            log.info("report_intent_voided", report_id=report_id)
        return voided

    async def submit(self, report_id: int, body: Mapping[str, Any]) -> None:
        """Fix the report's body (durably) and queue it for prompt delivery."""
        store = self._store_()
        if await store.submit(report_id, body, self._clock()):
            job_id = self._owners.pop(report_id, None)
            if job_id is None:
                row = await store.get(report_id)
                job_id = row.job_id if row else None
            log.info("report_submitted", job_id=job_id, report_id=report_id)
            self._deliverer.wake()
            return
        row = await store.get(report_id)
        if row is None:
            raise AftdError(f"unknown report id {report_id}")
        # Already released or sent: exactly one report per intent, so the late body is dropped.
        log.warning("report_already_fixed", job_id=row.job_id, report_id=report_id,
                    state=row.state)

    async def owner_of(self, report_id: int) -> str | None:
        """The job a report belongs to (None: unknown id). An idempotency key that is already
        taken yields the existing row's id from :meth:`record_intent`, whoever recorded it."""
        row = await self._store_().get(report_id)
        return row.job_id if row is not None else None

    async def release_job(self, job_id: str) -> int:
        """The job ended: its unsubmitted intents become pending ``failure_body`` reports."""
        if job_id not in self._intending:
            return 0
        n = await self._store_().release(job_id, self._clock())
        self._intending.discard(job_id)
        for report_id in [r for r, owner in self._owners.items() if owner == job_id]:
            del self._owners[report_id]
        if n:
            log.warning("report_intent_released", job_id=job_id, count=n)
            self._deliverer.wake()
        return n

    async def release_all_intents(self) -> int:
        """At start-up no job runs, so every leftover intent is owed as a failure report."""
        n = await self._store_().release(None, self._clock())
        if n:
            log.warning("report_intents_released_at_startup", count=n)
            self._deliverer.wake()
        return n

    async def prune(self, before: float) -> int:
        """Forget delivered and abandoned reports created before ``before`` (a Unix time);
        pending reports and intents are never pruned."""
        n = await self._store_().prune(before)
        if n:
            log.info("reports_pruned", count=n)
        return n

    # -- queries ---------------------------------------------------------------------------

    async def job_report(self, job_id: str) -> dict[str, Any] | None:
        """Delivery state of the job's (latest) report, for ``GET /v1/jobs/{id}``."""
        row = await self._store_().latest_for_job(job_id)
        return None if row is None else _delivery(row)

    async def reports(self, states: Sequence[str], limit: int,
                      before_id: int | None = None) -> list[dict[str, Any]]:
        """Reports in ``states`` (pending, abandoned, ...), newest first, for
        ``GET /v1/reports``; ``before_id`` continues a page."""
        rows = await self._store_().list_reports(states, limit, before_id)
        return [_listed(row) for row in rows]

    async def retry_now(self, report_id: int) -> dict[str, Any]:
        """Send a report again now: an abandoned one becomes pending with a fresh deadline, a
        pending one is due at once. Raises :class:`UnknownReport` or
        :class:`ReportNotRetryable` (an intent, or delivered already)."""
        store = self._store_()
        if not await store.retry_now(report_id, self._clock()):
            row = await store.get(report_id)
            if row is None:
                raise UnknownReport(f"no report with id {report_id}")
            raise ReportNotRetryable(f"report {report_id} is {row.state}; only pending and "
                                     "abandoned reports can be retried")
        row = await store.get(report_id)
        if row is None:  # pruned in between: only delivered or abandoned rows are
            raise UnknownReport(f"no report with id {report_id}")
        log.info("report_retry_requested", job_id=row.job_id, report_id=report_id)
        self._deliverer.wake()
        return _listed(row)

    def depth(self) -> int:
        """Reports waiting for delivery, from memory: health and metrics never wait on disk."""
        return 0 if self._store is None else self._store.open_count("pending")

    def _store_(self) -> OutboxStorage:
        if self._store is None:
            raise RuntimeError("Outbox is not started")
        return self._store

class _ReportChannel:
    """Final reports as a channel of the delivery loop: a bearer token resolved per attempt
    (a rotated token is picked up on retry) and the body fixed at submit time."""

    kind = "report"

    def __init__(self, outbox: Outbox, store: OutboxStorage) -> None:
        self._outbox = outbox
        self._store = store

    async def due(self, now: float, limit: int) -> list[OutboxRow]:
        if not self._store.delivering():  # a fleet host whose lease may have lapsed sends none
            return []
        return await self._store.due(now, limit)

    async def next_due_after(self, now: float) -> float | None:
        if not self._store.delivering():  # look again soon: the lease may come back
            return now + 1.0
        return await self._store.next_due_after(now)

    async def request(self, row: OutboxRow, secrets: SecretResolver) -> Request:
        assert row.body is not None
        headers = {"Content-Type": "application/json", "Idempotency-Key": row.idempotency_key}
        if row.token_secret:
            headers["Authorization"] = f"Bearer {await secrets.get(row.token_secret)}"
        return Request(row.url, row.body.encode(), headers)

    async def retry_later(self, row: OutboxRow, attempts: int, status: int | None,
                          error: str | None, next_at: float) -> None:
        await self._store.retry_later(row.id, attempts, status, error, next_at)

    async def finish(self, row: OutboxRow, state: str, attempts: int, status: int | None,
                     error: str | None, now: float) -> None:
        await self._store.finish(row.id, state, attempts, status, error, now)

    def log_fields(self, row: OutboxRow) -> dict[str, Any]:
        return {"job_id": row.job_id, "report_id": row.id}

    async def settled(self, row: OutboxRow, outcome: str, error: str | None) -> None:
        await self._outbox._settled(row, outcome)


def _delivery(row: OutboxRow) -> dict[str, Any]:
    """A report's delivery state as the API shows it (never its URL or body)."""
    return {
        "reportId": row.id,
        "state": row.state,
        "attempts": row.attempts,
        "lastError": row.last_error,
        "lastStatus": row.last_status,
        "deliveredAt": _iso(row.delivered_at),
        "nextAttemptAt": _iso(row.next_at) if row.state == "pending" else None,
        "idempotencyKey": row.idempotency_key,
    }


def _listed(row: OutboxRow) -> dict[str, Any]:
    return {**_delivery(row), "jobId": row.job_id, "createdAt": _iso(row.created_at)}
