"""A job's own log: lines are numbered as they happen and written to the store in batches."""

from __future__ import annotations

from typing import Any

from aftd.jobs.store import JobStore

__all__ = ["JobLog"]


class JobLog:
    """Receives the job's structlog entries (already redacted) and buffers them for the store."""

    def __init__(self, job_id: str, store: JobStore, keep: int, start_seq: int = 0) -> None:
        self.job_id = job_id
        self._store = store
        self._keep = keep
        self._seq = start_seq
        self._pending: list[tuple[int, dict[str, Any]]] = []

    def write(self, entry: dict[str, Any]) -> None:
        self._seq += 1
        entry.pop("job_id", None)  # implied by where the line is stored
        self._pending.append((self._seq, entry))
        # Bound memory even if the flusher falls behind a chatty script.
        if len(self._pending) > self._keep:
            del self._pending[: len(self._pending) - self._keep]

    def flush(self) -> None:
        if self._pending:
            batch, self._pending = self._pending, []
            self._store.append_logs(self.job_id, batch, self._keep)
