"""What the runner keeps about one job it runs, and how a decided end is applied to the job."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import structlog

from aftd.config import JobsConfig
from aftd.jobs.joblog import JobLog
from aftd.jobs.model import Job, JobState
from aftd.redact import scrub
from aftd.scripts.context import Services
from aftd.scripts.loader import ScriptLoader

__all__ = ["Env", "Final", "JobEndHook", "Run", "apply_final", "call_hook", "log_finished",
           "progress_of", "snapshot"]

log = structlog.get_logger("aftd.runner")

JobEndHook = Callable[[Job], Awaitable[None] | None]


@dataclass
class Run:
    job_id: str
    task: asyncio.Task[None] | None = None
    job: Job | None = None  # loaded from the store when the job starts
    joblog: JobLog | None = None
    started: bool = False  # marked running (a shutdown now interrupts it)
    shutdown: bool = False  # cancelled by the daemon stopping, not by a user
    cancel_requested: bool = False
    settled: bool = False
    claimed: bool = False  # taken from a fleet's shared queue: already marked running
    saved: tuple[int, int, int, int] | None = None  # the progress last written to the store
    # Set once the final state is visible: after the job's log lines reached the store, so
    # whoever sees the final state can read every line.
    visible: asyncio.Event = field(default_factory=asyncio.Event)


class Final(NamedTuple):
    status: JobState
    code: int | None
    error: str | None


@dataclass
class Env:
    """What a job was started with; a reload changes these for later jobs only."""

    loader: ScriptLoader
    services: Services
    jobs: JobsConfig
    start_hooks: list[JobEndHook] = field(default_factory=list)


def progress_of(job: Job) -> tuple[int, int, int, int]:
    p = job.progress
    return p.files_done, p.files_total, p.bytes_done, p.bytes_total


def snapshot(job: Job) -> Job:
    """A copy of a live job that the runner's later changes leave alone."""
    return replace(job, progress=replace(job.progress))


def apply_final(job: Job, final: Final) -> None:
    job.status, job.exit_code = final.status, final.code
    job.error = scrub(final.error) if final.error else None
    job.finished_at = time.time()


def log_finished(job: Job) -> None:
    dur = job.duration_s(job.finished_at or time.time()) or 0.0
    log.info("job_finished", job_id=job.id, script_id=job.script_id, status=str(job.status),
             exit_code=job.exit_code, error=job.error,
             duration_s=round(dur, 3) if math.isfinite(dur) else None)


async def call_hook(hook: JobEndHook, job: Job) -> None:
    result = hook(job)
    if result is not None:
        await result
