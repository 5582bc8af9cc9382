"""Counts kept in memory and refreshed from the fleet's database in the background, so health
and metrics never wait on it (the job store's counts by state, each delivery table's open rows).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from aftd.store.errors import StoreError
from aftd.tasks import cancel_and_wait

__all__ = ["COUNTS_INTERVAL_S", "Refresher"]

COUNTS_INTERVAL_S = 2.0


class Refresher:
    """Runs ``work(n)`` every :data:`COUNTS_INTERVAL_S` (``n`` counts the rounds from 1) in a
    task of its own; a round the database refuses is skipped, the counts staying as they were."""

    def __init__(self, name: str, work: Callable[[int], Awaitable[None]]) -> None:
        self._name = name
        self._work = work
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _run(self) -> None:
        n = 0
        while True:
            await asyncio.sleep(COUNTS_INTERVAL_S)
            n += 1
            with contextlib.suppress(StoreError):
                await self._work(n)
