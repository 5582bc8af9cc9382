"""Reading an object as consecutive byte ranges fetched a few at a time, handed out in order.

Object stores serve ranged GETs, and one request at a time leaves the link idle between them
(rclone downloads large files in several streams for the same reason). Here ``depth`` ranges of
``segment`` bytes are in flight; memory is bounded by ``depth x segment`` whatever the object's
size. Each fetch retries itself (the backend's concern); a failure that gets through cancels
the others and is raised by :meth:`SegmentReader.read`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

__all__ = ["Fetch", "SegmentReader"]

Fetch = Callable[[int, int], Awaitable[bytes]]  # (start, end) -> exactly bytes [start, end)


class SegmentReader:
    """Bytes ``[pos, size)`` of one object version, ``segment`` at a time, in order."""

    def __init__(self, fetch: Fetch, pos: int, size: int, segment: int, depth: int) -> None:
        self.fetch, self.next, self.size = fetch, pos, size
        self.segment, self.depth = segment, depth
        self.pending: deque[asyncio.Task[bytes]] = deque()

    def _fill(self) -> None:
        while len(self.pending) < self.depth and self.next < self.size:
            end = min(self.next + self.segment, self.size)
            self.pending.append(asyncio.ensure_future(self.fetch(self.next, end)))
            self.next = end

    async def read(self) -> bytes:
        self._fill()
        if not self.pending:
            return b""
        task = self.pending[0]
        try:
            data = await task
        except BaseException:
            await self.close()
            raise
        self.pending.popleft()
        self._fill()  # keep the pipe full while the caller writes this one
        return data

    async def close(self) -> None:
        tasks = list(self.pending)
        self.pending.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
