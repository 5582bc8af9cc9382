"""Pushed notifications: a POST to each matching ``[[notify]]`` URL when a job ends, a report is
given up on or a trigger fails, delivered through the durable outbox (README, "Notifications").

Other parts of the daemon report events with :func:`emit`; the daemon installs the running
:class:`~aftd.notify.service.Notifications` with :func:`install`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from aftd.notifyconfig import EVENTS, JOB_EVENTS, EventName

__all__ = ["EVENTS", "JOB_EVENTS", "EventName", "Sink", "emit", "install"]


class Sink(Protocol):
    async def emit(self, event: str, payload: Mapping[str, Any], *,
                   key: str | None = None) -> int: ...


_SINK: list[Sink] = []


def install(sink: Sink | None) -> None:
    """Make ``sink`` receive :func:`emit` (None: no notifications, e.g. at shutdown)."""
    _SINK[:] = [sink] if sink is not None else []


async def emit(event: str, payload: Mapping[str, Any], *, key: str | None = None) -> int:
    """Record ``event`` for every ``[[notify]]`` entry that wants it; returns how many
    notifications were queued (durably: they are sent even after a crash).

    ``payload`` is a JSON object of the event's details (``trigger``, ``scriptId``, ``error``,
    ...; ``scriptId`` is matched against each entry's ``scripts``). ``key`` makes the event
    idempotent: the same (entry, event, key) is queued once, so a caller that retries after a
    crash does not notify twice; without it every call is a new event. Unknown events raise
    ``ValueError``. Without a running daemon (tests, tools) nothing is sent.
    """
    if event not in EVENTS:
        raise ValueError(f"unknown notification event {event!r}; one of {', '.join(EVENTS)}")
    if not _SINK:
        return 0
    return await _SINK[0].emit(event, payload, key=key)
