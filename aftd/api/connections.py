"""Per-connection deadlines: nothing a client does (or fails to do) holds a connection forever.

Each accepted connection is wrapped in a :class:`GuardedProtocol` that delegates to aiohttp's
request handler and owns one timer:

* from the end of the TLS handshake until a request's headers are complete and its handler
  starts: ``header_timeout_s``;
* while a handler runs: no timer here (the body read and slow writers have deadlines of their
  own, see :mod:`aftd.api.middleware`);
* after a handler returns: ``keepalive_timeout_s`` plus the header and body timeouts, a
  backstop behind aiohttp's own keep-alive timer that also covers a client that never reads
  its response.

When the timer runs out the connection is aborted (no TLS close-notify to wait for) and one
line is logged. The request middleware tells the guard when a handler starts and ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

__all__ = ["ConnectionTracker", "GuardedProtocol", "Timeouts"]

log = structlog.get_logger("aftd.api")


@dataclass(frozen=True)
class Timeouts:
    header_s: float = 10.0
    body_s: float = 30.0
    keepalive_s: float = 15.0

    @property
    def after_response_s(self) -> float:
        return self.keepalive_s + self.header_s + self.body_s


class GuardedProtocol(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind a deadline; see the module docstring."""

    def __init__(self, inner: asyncio.Protocol, tracker: ConnectionTracker,
                 on_lost: Callable[[], None]) -> None:
        self.inner = inner
        self._tracker = tracker
        self._on_lost = on_lost
        self._transport: asyncio.BaseTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._phase = "headers"
        self._requests = 0

    # -- asyncio.Protocol, delegated ---------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._tracker.add(self)
        self._arm(self._tracker.timeouts.header_s, "headers")
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        self._tracker.discard(self)
        self._on_lost()
        self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    # -- request phases (called by the middleware) -------------------------------------------
    def request_started(self) -> None:
        self._requests += 1
        self._cancel_timer()

    def request_finished(self) -> None:
        self._requests -= 1
        if self._requests == 0 and self._transport is not None:
            self._arm(self._tracker.timeouts.after_response_s, "keepalive")

    # -- the deadline ------------------------------------------------------------------------
    def _arm(self, delay: float, phase: str) -> None:
        self._cancel_timer()
        self._phase = phase
        self._timer = asyncio.get_running_loop().call_later(delay, self._expire)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        peer = transport.get_extra_info("peername")
        log.info("connection_timed_out", phase=self._phase,
                 remote=peer[0] if isinstance(peer, tuple) else None)
        self.abort()

    def abort(self) -> None:
        """Drop the connection now: no TLS close-notify, no flushing of unsent data."""
        if self._transport is not None:
            abort: Any = getattr(self._transport, "abort", self._transport.close)
            abort()


class ConnectionTracker:
    """The live connections: aiohttp's protocol object -> its guard."""

    def __init__(self, timeouts: Timeouts) -> None:
        self.timeouts = timeouts
        self._guards: dict[object, GuardedProtocol] = {}

    def add(self, guard: GuardedProtocol) -> None:
        self._guards[guard.inner] = guard

    def discard(self, guard: GuardedProtocol) -> None:
        self._guards.pop(guard.inner, None)

    def guard_for(self, protocol: object) -> GuardedProtocol | None:
        return self._guards.get(protocol)

    def __len__(self) -> int:
        return len(self._guards)

    def abort_all(self) -> None:
        for guard in list(self._guards.values()):
            guard.abort()
