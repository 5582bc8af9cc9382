"""What the runner and the API need from a job store, whatever holds it: SQLite for one host
(:class:`aftd.jobs.store.JobStore`) or PostgreSQL for a fleet (:mod:`aftd.store.pg`).

Every method is a coroutine except ``counts``, the in-memory view that health and metrics read
without touching the database. A store that fails raises :class:`sqlite3.Error` or
:class:`OSError` (:class:`aftd.errors.StoreError` for a database): both are retried.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aftd.jobs.model import Job

__all__ = ["STORE_ERRORS", "CancelRequest", "JobClaims", "JobStorage"]

# What a caller catches to retry later: either backend's failures.
STORE_ERRORS: tuple[type[BaseException], ...] = (sqlite3.Error, OSError)


@dataclass(frozen=True)
class CancelRequest:
    """What asking the store to cancel a job did: ``cancelled`` (it was queued and is now
    cancelled), ``requested`` (it runs on ``host``, which is told), ``finished`` (too late) or
    ``unknown`` (no such job)."""

    outcome: str
    job: Job | None = None
    host: str | None = None


class JobStorage(Protocol):
    """Jobs, their logs and idempotency keys."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> bool: ...
    def counts(self) -> dict[str, int]: ...
    async def recount(self) -> None: ...
    async def create(self, job: Job) -> tuple[Job, bool]: ...
    async def get(self, job_id: str) -> Job | None: ...
    async def list_jobs(self, *, status: Sequence[str] = (), script_id: str | None = None,
                        limit: int = 50, before_seq: int | None = None,
                        trigger: str | None = None) -> list[Job]: ...
    async def set_running(self, job_id: str, started_at: float) -> None: ...
    async def finish(self, job: Job) -> None: ...
    async def save_progress(self, jobs: Iterable[Job]) -> None: ...
    async def interrupt_running(self, now: float, reason: str) -> list[str]: ...
    async def queued_ids(self) -> list[str]: ...
    async def prune(self, finished_before: float) -> int: ...
    async def append_logs(self, job_id: str, entries: Sequence[tuple[int, dict[str, Any]]],
                          keep: int) -> None: ...
    async def logs(self, job_id: str, after_seq: int = 0,
                   limit: int = 10_000) -> list[dict[str, Any]]: ...
    async def last_log_seq(self, job_id: str) -> int: ...


class JobClaims(Protocol):
    """A store shared by a fleet: queued jobs are claimed by the host that runs them, and a
    cancel may have to reach another host."""

    async def claim(self, limit: int, now: float) -> list[Job]:
        """Take up to ``limit`` queued jobs this host may run (now running here)."""
        ...

    async def request_cancel(self, job_id: str, now: float) -> CancelRequest: ...
