"""Pauses made on another host of a fleet: each host reads the shared trigger state now and
then and pauses or resumes its own runtimes to match (a pause or resume sent to any host thus
holds for the whole fleet within ``interval_s``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

import structlog

from aftd.triggers.manager import TriggerManager

__all__ = ["PausedStates", "follow_pauses"]

log = structlog.get_logger("aftd.triggers")

# trigger name -> (paused, since)
PausedStates = Callable[[], Awaitable[Mapping[str, tuple[bool, float]]]]


async def follow_pauses(manager: TriggerManager, read: PausedStates, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            states = await read()
        except Exception as exc:  # the store is down: the next round tries again
            log.debug("trigger_follow_failed", error=f"{type(exc).__name__}: {exc}")
            continue
        for name, runtime in list(manager.runtimes.items()):
            state = states.get(name)
            if state is None or state[0] == runtime.paused:
                continue
            runtime.paused, runtime.since = state
            log.info("trigger_paused" if runtime.paused else "trigger_resumed", trigger=name,
                     by="another host")
            runtime.wake()
