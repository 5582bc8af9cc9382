"""Bytes transferred per minute over the last hour, for the console's throughput chart.

A fixed ring of per-minute counters: memory is the same whatever the traffic, and adding is
O(1) on the event loop (the copy engine reports every chunk through the job's progress sink).
The ring lives in the daemon's memory only; a restart starts it empty.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["BUCKET_S", "ThroughputRing"]

BUCKET_S = 60


class ThroughputRing:
    """``minutes`` per-minute byte counters; the newest is the current (partial) minute."""

    def __init__(self, minutes: int = 60, clock: Callable[[], float] = time.time) -> None:
        if minutes < 1:
            raise ValueError("minutes must be at least 1")
        self.minutes = minutes
        self._clock = clock
        # Slot i holds (minute number, bytes) for a minute whose number is i modulo the size.
        self._slots: list[tuple[int, int]] = [(-1, 0)] * minutes

    def add(self, nbytes: int) -> None:
        if nbytes <= 0:
            return
        minute = int(self._clock() // BUCKET_S)
        slot = minute % self.minutes
        held, total = self._slots[slot]
        self._slots[slot] = (minute, (total if held == minute else 0) + nbytes)

    def series(self) -> list[tuple[float, int]]:
        """(start of the minute as a Unix time, bytes), oldest first, one per minute."""
        now = int(self._clock() // BUCKET_S)
        out = []
        for minute in range(now - self.minutes + 1, now + 1):
            held, total = self._slots[minute % self.minutes]
            out.append((float(minute * BUCKET_S), total if held == minute else 0))
        return out
