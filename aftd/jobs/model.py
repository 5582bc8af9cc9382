"""The job record and its states."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = ["TERMINAL", "Job", "JobState", "Progress", "iso"]


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED,
                      JobState.INTERRUPTED})


@dataclass
class Progress:
    files_done: int = 0
    files_total: int = 0
    bytes_done: int = 0
    bytes_total: int = 0

    def add_total(self, files: int = 0, nbytes: int = 0) -> None:
        self.files_total += files
        self.bytes_total += nbytes

    def advance(self, files: int = 0, nbytes: int = 0) -> None:
        self.files_done += files
        self.bytes_done += nbytes


@dataclass
class Job:
    id: str
    script_id: str
    params: dict[str, Any]
    status: JobState
    created_at: float
    seq: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    error: str | None = None
    idempotency_key: str | None = None
    progress: Progress = field(default_factory=Progress)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def duration_s(self, now: float) -> float | None:
        if self.started_at is None:
            return None
        return (self.finished_at or now) - self.started_at

    def to_api(self, now: float) -> dict[str, Any]:
        p = self.progress
        dur = self.duration_s(now)
        rate = p.bytes_done / dur if dur and dur > 0 else 0.0
        return {
            "jobId": self.id,
            "scriptId": self.script_id,
            "status": str(self.status),
            "params": self.params,
            "createdAt": iso(self.created_at),
            "startedAt": iso(self.started_at),
            "finishedAt": iso(self.finished_at),
            "exitCode": self.exit_code,
            "error": self.error,
            "progress": {
                "filesDone": p.files_done, "filesTotal": p.files_total,
                "bytesDone": p.bytes_done, "bytesTotal": p.bytes_total,
                "bytesPerSecond": round(rate, 1),
            },
        }


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
