"""The outbox's delivery loop: durable rows of every channel POSTed at least once.

A *channel* is one kind of row the outbox carries (final reports to an orchestrator, pushed
notifications): it keeps its rows in a durable store, says which are due and builds each one's
HTTP request. The loop here is shared by all channels: one aiohttp session, one bound on
requests in flight, one retry policy (``[reports]``: backoff with jitter, ``Retry-After``, a
deadline counted from when the row became pending). A row keeps its ``Idempotency-Key`` on every
attempt, so the receiver can drop duplicates; it leaves the loop when it is delivered (2xx),
refused (another 4xx, a redirect, or a request that cannot be built, e.g. a secret that does
not exist), or its deadline passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import aiohttp
import structlog

from aftd.config import ReportsConfig
from aftd.errors import AftdError
from aftd.redact import scrub
from aftd.report.policy import (
    Outcome,
    backoff_delay,
    classify,
    parse_retry_after,
    schedule_retry,
)
from aftd.secrets.base import SecretResolver

__all__ = ["Channel", "Deliverer", "DeliveryRow", "PreparationError", "Request"]

log = structlog.get_logger("aftd.report.outbox")

_ERROR_SNIPPET = 200


class DeliveryRow(Protocol):
    """What the loop reads of a channel's row."""

    @property
    def id(self) -> int: ...

    @property
    def attempts(self) -> int: ...

    @property
    def pending_at(self) -> float | None: ...


R = TypeVar("R", bound=DeliveryRow)


@dataclass(frozen=True)
class Request:
    url: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


class PreparationError(AftdError):
    """A row's request could not be built (a secret, a URL); the message says which part and
    never holds a secret value. ``permanent``: retrying cannot help (a secret that does not
    exist), so the row is given up at once; otherwise it is retried like a failed POST."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class Channel(Protocol[R]):
    """One kind of row the outbox delivers. ``kind`` prefixes its log events
    (``report_delivered``, ``notification_abandoned``)."""

    kind: str

    async def due(self, now: float, limit: int) -> Sequence[R]: ...

    async def next_due_after(self, now: float) -> float | None: ...

    async def request(self, row: R, secrets: SecretResolver) -> Request:
        """The POST for ``row``; may raise :class:`PreparationError` or another
        :class:`~aftd.errors.AftdError` (a secret lookup that failed: retried)."""
        ...

    async def retry_later(self, row: R, attempts: int, status: int | None, error: str | None,
                          next_at: float) -> None: ...

    async def finish(self, row: R, state: str, attempts: int, status: int | None,
                     error: str | None, now: float) -> None:
        """``state`` is ``delivered`` or ``abandoned``."""
        ...

    def log_fields(self, row: R) -> dict[str, Any]: ...

    async def settled(self, row: R, outcome: str, error: str | None) -> None:
        """Told after each attempt is stored: ``delivered``, ``retry`` or ``abandoned``."""
        ...


class _Attempt:
    """What one POST produced: an HTTP status (with Retry-After) or an error before an answer."""

    def __init__(self, status: int | None = None, error: str | None = None,
                 retry_after: float | None = None, permanent: bool = False) -> None:
        self.status = status
        self.error = error
        self.retry_after = retry_after
        self.permanent = permanent

    @property
    def outcome(self) -> Outcome:
        if self.permanent:
            return Outcome.ABANDON
        return Outcome.RETRY if self.status is None else classify(self.status)


def describe(exc: BaseException, timeout_s: float) -> str:
    """A short, secret-free description of a failure before an answer (no URL, no headers)."""
    if isinstance(exc, TimeoutError):
        return f"timed out after {timeout_s:g}s"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect: {exc.os_error.strerror or type(exc.os_error).__name__}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server disconnected"
    if isinstance(exc, PreparationError):
        return scrub(str(exc))[:_ERROR_SNIPPET]
    if isinstance(exc, AftdError):  # from the secret resolver: names the secret, not the value
        return f"token unavailable: {scrub(str(exc))}"
    return f"{type(exc).__name__}: {scrub(str(exc))}"[:_ERROR_SNIPPET]


class Deliverer:
    """The loop: sends due rows of every channel within ``max_in_flight``, sleeping until the
    next row is due or :meth:`wake` is called."""

    def __init__(self, cfg: ReportsConfig, secrets: SecretResolver, *, max_in_flight: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.secrets = secrets
        self._max_in_flight = max(1, max_in_flight)
        self._clock = clock
        self._channels: list[Channel[Any]] = []
        self._session: aiohttp.ClientSession | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._in_flight: dict[tuple[str, int], asyncio.Task[None]] = {}
        # Rows whose delivery ended since the current pass's query was sent: that query (run
        # in the store's thread) may still show them pending, and must not send them again.
        self._just_done: set[tuple[str, int]] = set()
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()

    def add(self, channel: Channel[Any]) -> None:
        if any(c.kind == channel.kind for c in self._channels):
            raise ValueError(f"a {channel.kind} channel is already there")
        self._channels.append(channel)
        self.wake()

    def wake(self) -> None:
        """Something became due: look now rather than at the next scheduled time."""
        self._wake.set()

    def start(self, session: aiohttp.ClientSession) -> None:
        self._session = session
        self._loop_task = asyncio.create_task(self._run(), name="aftd-outbox")

    async def aclose(self, flush_timeout_s: float) -> None:
        """Give due rows ``flush_timeout_s`` to go out, then stop; the rest stay durable."""
        if self._loop_task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained(), flush_timeout_s)
        tasks = [t for t in (self._loop_task, *self._in_flight.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._in_flight.clear()
        self._loop_task = None

    async def _drained(self) -> None:
        while self._in_flight or await self._any_due():
            self._progress.clear()
            await self._progress.wait()

    async def _any_due(self) -> bool:
        now = self._clock()
        for channel in list(self._channels):
            if await channel.due(now, 1):
                return True
        return False

    # -- the loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        failing = False
        while True:
            self._wake.clear()  # before looking, so a submit during this pass is not missed
            try:
                timeout = await self._dispatch_due()
            except (sqlite3.Error, OSError) as exc:  # locked, full, or a database that is down
                if not failing:
                    log.warning("outbox_store_unavailable", error=str(exc))
                failing, timeout = True, 1.0
            except Exception:  # a bug must not end delivery for good
                log.exception("outbox_loop_error")
                timeout = 1.0
            else:
                failing = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _dispatch_due(self) -> float | None:
        """Start sends for due rows within the concurrency bound; return seconds to sleep."""
        now = self._clock()
        if self._max_in_flight - len(self._in_flight) > 0:
            self._just_done = set()
            for channel in list(self._channels):
                await self._dispatch(channel, now)
        nexts = [n for c in list(self._channels) if (n := await c.next_due_after(now)) is not None]
        return None if not nexts else max(0.0, min(nexts) - self._clock())

    async def _dispatch(self, channel: Channel[Any], now: float) -> None:
        free = self._max_in_flight - len(self._in_flight)
        if free <= 0:
            return
        rows = await channel.due(now, free + len(self._in_flight))
        free = self._max_in_flight - len(self._in_flight)
        for row in rows:
            if free <= 0:
                break
            key = (channel.kind, row.id)
            if key in self._in_flight or key in self._just_done:
                continue
            self._in_flight[key] = asyncio.create_task(self._deliver(channel, row))
            free -= 1

    async def _deliver(self, channel: Channel[Any], row: Any) -> None:
        key = (channel.kind, row.id)
        try:
            attempt = await self._post(channel, row)
            await self._record(channel, row, attempt)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug; the row stays pending and is tried again
            log.exception(f"{channel.kind}_delivery_error", **channel.log_fields(row))
        finally:
            self._in_flight.pop(key, None)
            self._just_done.add(key)
            self._wake.set()
            self._progress.set()

    async def _post(self, channel: Channel[Any], row: Any) -> _Attempt:
        assert self._session is not None
        try:
            req = await channel.request(row, self.secrets)
            async with self._session.post(req.url, data=req.body, headers=dict(req.headers),
                                          allow_redirects=False) as resp:
                ok = 200 <= resp.status < 300
                text = "" if ok else await resp.text(errors="replace")
                return _Attempt(
                    status=resp.status, error=None if ok else _http_error(resp, text),
                    retry_after=parse_retry_after(resp.headers.get("Retry-After"),
                                                  self._clock()))
        except (aiohttp.ClientError, TimeoutError, OSError, AftdError) as exc:
            return _Attempt(error=describe(exc, self.cfg.timeout_s),
                            permanent=isinstance(exc, PreparationError) and exc.permanent)

    async def _record(self, channel: Channel[Any], row: Any, attempt: _Attempt) -> None:
        """Store what the attempt produced. A failed write backs off like a failed delivery
        and is retried while the row stays in flight: the row is not POSTed again just
        because its outcome could not be written down."""
        tries = 0
        while True:
            tries += 1
            try:
                outcome, error = await self._store_outcome(channel, row, attempt)
                break
            except (sqlite3.Error, OSError) as exc:
                delay = backoff_delay(tries, self.cfg)
                log.warning(f"{channel.kind}_record_failed", **channel.log_fields(row),
                            error=str(exc), retry_in_s=round(delay, 3))
            await asyncio.sleep(delay)
        try:
            await channel.settled(row, outcome, error)
        except Exception:  # a hook (metrics, a follow-up event) must not stop delivery
            log.exception(f"{channel.kind}_settled_hook_failed", **channel.log_fields(row))

    async def _store_outcome(self, channel: Channel[Any], row: Any,
                             attempt: _Attempt) -> tuple[str, str | None]:
        n = row.attempts + 1
        now = self._clock()
        outcome = attempt.outcome
        fields = channel.log_fields(row)
        if outcome is Outcome.DELIVERED:
            await channel.finish(row, "delivered", n, attempt.status, None, now)
            log.info(f"{channel.kind}_delivered", **fields, attempts=n, status=attempt.status)
            return "delivered", None
        if outcome is Outcome.RETRY:
            sched = schedule_retry(attempt=n, now=now, pending_at=row.pending_at or now,
                                   cfg=self.cfg, retry_after=attempt.retry_after)
            if sched.next_at is not None:
                await channel.retry_later(row, n, attempt.status, attempt.error, sched.next_at)
                log.warning(f"{channel.kind}_retry_scheduled", **fields, attempts=n,
                            status=attempt.status, error=attempt.error,
                            delay_s=round(sched.delay_s, 3))
                return "retry", attempt.error
        reason = attempt.error if outcome is Outcome.ABANDON else \
            f"deadline passed; last error: {attempt.error}"
        await channel.finish(row, "abandoned", n, attempt.status, reason, now)
        log.error(f"{channel.kind}_abandoned", **fields, attempts=n, status=attempt.status,
                  error=reason)
        return "abandoned", reason


def _http_error(resp: aiohttp.ClientResponse, text: str) -> str:
    # Scrubbed before whitespace is squeezed and the text cut: either could break a secret
    # into parts that no longer match.
    snippet = " ".join(scrub(text).split())[:_ERROR_SNIPPET]
    reason = scrub(resp.reason or "")
    return f"HTTP {resp.status} {reason}".rstrip() + (f": {snippet}" if snippet else "")
