"""How many files a tree copy keeps in flight: ``transfers`` fixed, or grown while it pays.

A tree of small files is bound by round trips per file (open, write, close, rename), not by
bytes: over a 20 ms path one file takes several round trips whatever the bandwidth, so the way
to go faster is more files at once. How many pays depends on the path and the CPU, which the
copy cannot know in advance. With ``transfers="auto"`` a :class:`Pacer` starts at
:data:`START` files (the old fixed default) and, after each measuring period, doubles the
number while throughput rose by at least :data:`RISE` over the best period so far, up to the cap
the VFS involved set (``max_files_in_flight``); when a doubling brings no rise it goes back to
the best level and holds, trying again after :data:`HOLD_PERIODS` periods.

Throughput counts bytes plus :data:`FILE_COST` per finished file, so a period of small files
and one of large files compare fairly. Memory stays bounded: a file weighs one slot per
:data:`WEIGHT_BYTES` (the buffers a large file keeps in flight), the slots in use stay within
the current number, and only the first :data:`START` files run whatever they weigh, so growth
adds small files, never many large ones.
"""

from __future__ import annotations

import asyncio
import time

import structlog

__all__ = ["FILE_COST", "HOLD_PERIODS", "RISE", "START", "WEIGHT_BYTES", "Pacer"]

log = structlog.get_logger("aftd.vfs.copy")

START = 4
RISE = 1.10  # a doubling must gain 10 % to count as rising (less is measuring noise)
FILE_COST = 64 << 10  # a finished file's round trips cost about as much time as these bytes
WEIGHT_BYTES = 1 << 20
MIN_PERIOD_S = 0.05
HOLD_PERIODS = 4


class Pacer:
    """Admission of files into a copy. ``start == cap`` is a fixed count (no measuring)."""

    def __init__(self, start: int, cap: int) -> None:
        self.floor = self.limit = self.best_limit = start
        self.cap = max(cap, start)
        self.growing = self.cap > start
        self.running = self.weight = self.peak = 0
        self.best = 0.0
        self._held = 0
        self._period_start = time.monotonic()
        self._units = self._files = 0
        self._settling = False  # a new limit is measured once that many files run
        self._changed = asyncio.Event()

    def _weight(self, size: int) -> int:
        return min(self.cap, 1 + size // WEIGHT_BYTES)

    def admits(self, size: int) -> bool:
        if self.running < self.floor:
            return True
        if self.floor == self.cap:  # a fixed count: exactly that many files, as before
            return False
        return self.weight + self._weight(size) <= self.limit

    async def wait(self) -> None:
        """Until a file finishes (then :meth:`admits` may say yes)."""
        self._changed.clear()
        await self._changed.wait()

    def started(self, size: int) -> None:
        self.running += 1
        self.weight += self._weight(size)
        self.peak = max(self.peak, self.running)
        if self._settling and self.weight >= self.limit:
            self._restart()

    def finished(self, size: int) -> None:
        self.running -= 1
        self.weight -= self._weight(size)
        self._units += size + FILE_COST
        self._files += 1
        self._changed.set()
        if self.cap > self.floor:
            self._measure()

    def _restart(self) -> None:
        self._period_start, self._units, self._files = time.monotonic(), 0, 0
        self._settling = False

    def _measure(self) -> None:
        elapsed = time.monotonic() - self._period_start
        if self._settling or self._files < 2 * self.limit or elapsed < MIN_PERIOD_S:
            return
        rate = self._units / elapsed
        self._restart()
        if not self.growing:
            self._held += 1
            if self._held >= HOLD_PERIODS and self.limit < self.cap:
                # Conditions change (file sizes, the path, other load): measure anew.
                self.best, self.growing, self._held = rate, True, 0
                self._set(min(self.cap, self.limit * 2), rate)
            return
        if rate >= self.best * RISE:
            self.best, self.best_limit = rate, self.limit
            if self.limit >= self.cap:
                self.growing = False
            else:
                self._set(min(self.cap, self.limit * 2), rate)
        else:
            self.growing = False
            self._set(self.best_limit, rate)

    def _set(self, limit: int, rate: float) -> None:
        if limit != self.limit:
            log.debug("copy_files_in_flight_changed", files=limit, previous=self.limit,
                      rate_mb_s=round(rate / 1e6, 1))
            self.limit = limit
            # Measure the new level from when it is reached, not while it fills up.
            self._settling = True
