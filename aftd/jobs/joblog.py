"""A job's own log: lines are buffered as they happen and written to the store in batches.

No line is lost silently. Lines are numbered when they are written to the store, so the store
holds one gap-free sequence that ``GET .../log`` and followers read alike. When a script logs
faster than the store takes lines (or the store fails), the buffer keeps the newest lines (half
of ``keep``) and counts the ones it had to drop; the next batch starts with a ``log_lines_dropped``
marker line that says how many. A batch whose write failed is kept and written again, with the
same numbers, on the next flush.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from aftd.jobs.storage import JobStorage

__all__ = ["DROPPED_EVENT", "JobLog"]

DROPPED_EVENT = "log_lines_dropped"
# Ask the flusher for an early flush once this many lines wait (a chatty script).
EARLY_FLUSH_LINES = 500
_DRAIN_ROUNDS = 8


class JobLog:
    """Receives the job's structlog entries (already redacted) and buffers them for the store."""

    def __init__(self, job_id: str, store: JobStorage, keep: int, start_seq: int = 0,
                 wake: Callable[[], None] | None = None) -> None:
        self.job_id = job_id
        self._store = store
        self._keep = keep
        # Half of what the store keeps: a "lines dropped" marker is then never among the lines
        # that the store's own bound (the newest ``keep``) trims away right after.
        self._max_pending = max(10, keep // 2)
        self._seq = start_seq
        self._pending: deque[dict[str, Any]] = deque()
        self._dropped = 0
        self._batch: list[tuple[int, dict[str, Any]]] | None = None
        self._guard = threading.Lock()  # write() may be called from a job's worker threads
        self._flushing = asyncio.Lock()
        self._wake = wake

    def write(self, entry: dict[str, Any]) -> None:
        entry.pop("job_id", None)  # implied by where the line is stored
        with self._guard:
            self._pending.append(entry)
            # Bound memory even if the store falls behind: keep the newest, count the rest.
            while len(self._pending) > self._max_pending:
                self._pending.popleft()
                self._dropped += 1
            early = len(self._pending) == EARLY_FLUSH_LINES
        if early and self._wake is not None:
            self._wake()

    def _next_batch(self) -> list[tuple[int, dict[str, Any]]]:
        with self._guard:
            entries, self._pending = list(self._pending), deque()
            dropped, self._dropped = self._dropped, 0
        batch: list[tuple[int, dict[str, Any]]] = []
        if dropped:
            self._seq += 1
            batch.append((self._seq, {"event": DROPPED_EVENT, "level": "warning",
                                      "count": dropped,
                                      "message": f"{dropped} log lines were dropped: the "
                                                 "script logged faster than they could be "
                                                 "stored"}))
        for entry in entries:
            self._seq += 1
            batch.append((self._seq, entry))
        return batch

    async def flush(self) -> None:
        """Write what is buffered; on failure keep the batch for the next call and raise."""
        async with self._flushing:
            if self._batch is None:
                batch = self._next_batch()
                if not batch:
                    return
                self._batch = batch
            await self._store.append_logs(self.job_id, self._batch, self._keep)
            self._batch = None

    async def drain(self) -> None:
        """Flush until nothing is buffered (lines may arrive during a write); raises on a
        failed write, keeping the batch for the next call. Bounded: a task the script left
        behind that logs on and on must not hold the job's end."""
        for _ in range(_DRAIN_ROUNDS):
            await self.flush()
            with self._guard:
                if not self._pending and not self._dropped and self._batch is None:
                    return
