"""Getting how jobs end into the store: a decided end is written by a task of its own that
retries on store errors (a locked or full database delays the record, never the next job), the
job's last log lines first, its end hooks after; a background flusher writes running jobs' log
lines and progress."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog

from aftd.jobs.joblog import JobLog
from aftd.jobs.model import Job
from aftd.jobs.runstate import (
    Final,
    JobEndHook,
    Run,
    apply_final,
    call_hook,
    log_finished,
    progress_of,
)
from aftd.jobs.storage import STORE_ERRORS, JobStorage

__all__ = ["RETRY_FIRST_S", "RETRY_MAX_S", "STORE_FLUSH_S", "Recorder"]

log = structlog.get_logger("aftd.runner")

# How long shutdown waits for final job states and logs to reach the store.
STORE_FLUSH_S = 10.0
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 30.0
_FLUSH_INTERVAL_S = 0.5


class Recorder:
    def __init__(self, store: JobStorage, running: Mapping[str, Run]) -> None:
        self.store = store
        self._running = running  # the runner's live runs, whose logs and progress it flushes
        self.hooks: list[JobEndHook] = []
        self.finishing: dict[str, Job] = {}  # decided, not yet stored
        self._persisting: set[asyncio.Task[None]] = set()
        self._flusher: asyncio.Task[None] | None = None
        self._flush_now = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flush_failing = False

    def bind_loop(self) -> None:
        self._loop = asyncio.get_running_loop()

    def start_flusher(self) -> None:
        self._flusher = asyncio.create_task(self._flush_loop(), name="aftd-job-flusher")

    async def close(self, timeout_s: float) -> None:
        """Stop flushing; wait up to ``timeout_s`` for final states and logs to be stored."""
        if self._flusher is not None:
            self._flusher.cancel()
        with_timeout = [asyncio.create_task(self._flush_all())]
        pending = set(self._persisting) | set(with_timeout)
        _, pending = await asyncio.wait(pending, timeout=timeout_s)
        if pending:
            log.error("job_states_not_stored", count=len(pending),
                      note="they are recorded interrupted at the next start")

    def settle(self, run: Run, final: Final) -> None:
        """Decide the job's end (once) and hand it to a task that stores it, retrying."""
        if run.settled:
            return
        run.settled = True
        job = run.job
        if job is not None:
            apply_final(job, final)
            log_finished(job)
            if run.joblog is None:
                self.finishing[job.id] = job
                run.visible.set()
        task = asyncio.create_task(self._persist(run, job, final),
                                   name=f"aftd-job-final-{run.job_id}",
                                   context=contextvars.Context())
        self._persisting.add(task)
        task.add_done_callback(self._persisting.discard)

    async def _persist(self, run: Run, job: Job | None, final: Final) -> None:
        job_id = run.job_id
        try:
            if job is None:  # ended before it was loaded (cancelled while queued or picked)
                job = await self.retry("load", job_id, lambda: self.store.get(job_id))
                if job is None or job.terminal:
                    return
                apply_final(job, final)
                log_finished(job)
            stored = run.joblog is None or await _try_drain(run.joblog)
            self.finishing[job_id] = job
            run.visible.set()  # seen ended now; a follower still waits for every line
            if not stored and run.joblog is not None:
                # Retried like the final state, never dropped (shutdown bounds the wait).
                try:
                    await self.retry("log", job_id, run.joblog.drain)
                except Exception:  # not a store error: the final state must still be stored
                    log.exception("job_log_flush_failed", job_id=job_id)
            await self.retry("finish", job_id, functools.partial(self.store.finish, job))
            await self.run_hooks(job)
        finally:
            self.finishing.pop(job_id, None)
            run.visible.set()

    async def retry(self, step: str, job_id: str, fn: Callable[[], Awaitable[Any]]) -> Any:
        """``fn()`` until it stops failing with a store error (a locked or full database)."""
        delay = RETRY_FIRST_S
        while True:
            try:
                return await fn()
            except STORE_ERRORS as exc:
                log.warning("job_store_retry", step=step, job_id=job_id, error=str(exc),
                            retry_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)

    async def run_hooks(self, job: Job) -> None:
        for hook in self.hooks:
            try:
                await self.retry("end_hook", job.id, functools.partial(call_hook, hook, job))
            except Exception:  # a broken hook must not lose the job's final state
                log.exception("job_end_hook_failed", job_id=job.id)

    # -- background flushing -----------------------------------------------------------------
    def wake_flusher(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._flush_now.set)

    async def _flush_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_now.wait(), _FLUSH_INTERVAL_S)
            self._flush_now.clear()
            await self._flush_all()

    async def _flush_all(self) -> None:
        try:
            for run in list(self._running.values()):
                if run.joblog is not None:
                    await run.joblog.flush()
            # Only what moved since the last flush: most jobs' progress has not.
            moved = [(r, progress_of(r.job)) for r in list(self._running.values())
                     if r.job is not None and progress_of(r.job) != r.saved]
            await self.store.save_progress(r.job for r, _ in moved if r.job is not None)
            for r, now in moved:
                r.saved = now
        except Exception as exc:
            if not self._flush_failing:
                log.warning("job_flush_failed", error=f"{type(exc).__name__}: {exc}")
            self._flush_failing = True
        else:
            if self._flush_failing:
                log.info("job_flush_recovered")
            self._flush_failing = False


async def _try_drain(joblog: JobLog, attempts: int = 3, delay_s: float = 0.5) -> bool:
    """Store the job's buffered lines; False if the store kept failing (the lines stay
    buffered for a later :meth:`JobLog.drain`)."""
    for attempt in range(attempts):
        try:
            await joblog.drain()
            return True
        except Exception as exc:  # kept buffered; the caller retries store errors
            log.warning("job_log_flush_retry", job_id=joblog.job_id,
                        error=f"{type(exc).__name__}: {exc}")
            if attempt + 1 < attempts:
                await asyncio.sleep(delay_s)
    return False
