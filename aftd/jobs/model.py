"""The job record and its states."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, overload

__all__ = ["TERMINAL", "Job", "JobState", "Progress", "iso", "valid_timeout"]


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
    timeout_s: float | None = None  # given by the trigger; None: the script's or the config's
    trigger: str | None = None  # the [[triggers]] entry that fired the job; None: an API call
    # A fleet host runs the job only if it has all these tags (a script's REQUIRES_TAGS and the
    # trigger's hostTags); the host that claimed it (None: not claimed, or a single host).
    host_tags: tuple[str, ...] = ()
    host: str | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def duration_s(self, now: float) -> float | None:
        if self.started_at is None:
            return None
        return (self.finished_at or now) - self.started_at


def valid_timeout(value: Any) -> float | None:
    """A job timeout (seconds >= 0, 0: no limit) as a float, or None when ``value`` is not
    one; the trigger's ``timeoutS`` and a script's ``TIMEOUT_S`` are checked alike."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        seconds = float(value)
    except OverflowError:  # an integer beyond any float
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


@overload
def iso(ts: float) -> str: ...


@overload
def iso(ts: float | None) -> str | None: ...


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
