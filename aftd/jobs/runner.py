"""The runner: a FIFO queue, bounded concurrency, cancel, and the life of one job."""

from __future__ import annotations

import asyncio
import contextvars
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from aftd.config import JobsConfig
from aftd.jobs.joblog import JobLog
from aftd.jobs.model import Job, JobState
from aftd.jobs.store import JobStore
from aftd.logging import JOB_SINKS
from aftd.progress import CURRENT as PROGRESS
from aftd.redact import scrub
from aftd.scripts.context import JobContext, JobExit, Services
from aftd.scripts.loader import ScriptError, ScriptInfo, ScriptLoader

__all__ = ["Draining", "JobConflict", "JobNotFound", "QueueFull", "Runner"]

log = structlog.get_logger("aftd.runner")

JobEndHook = Callable[[Job], None]


class Draining(Exception):
    """The daemon is shutting down and accepts no new jobs."""


class QueueFull(Exception):
    """``jobs.max_queued`` jobs are already waiting."""


class JobNotFound(Exception):
    pass


class JobConflict(Exception):
    pass


@dataclass
class _Run:
    job: Job
    task: asyncio.Task[None]
    shutdown: bool = False  # cancelled by the daemon stopping, not by a user
    cancel_requested: bool = False


@dataclass
class _Env:
    """What a job was started with; a reload changes these for later jobs only."""

    loader: ScriptLoader
    services: Services
    jobs: JobsConfig
    hooks: list[JobEndHook] = field(default_factory=list)


class Runner:
    def __init__(self, store: JobStore, loader: ScriptLoader, services: Services,
                 jobs: JobsConfig) -> None:
        self.store = store
        self._env = _Env(loader, services, jobs)
        self._queue: dict[str, Job] = {}  # insertion-ordered: FIFO
        self._running: dict[str, _Run] = {}
        self._draining = False
        self._flusher: asyncio.Task[None] | None = None
        self._logs: dict[str, JobLog] = {}

    # -- configuration -----------------------------------------------------------------------
    def add_end_hook(self, hook: JobEndHook) -> None:
        self._env.hooks.append(hook)

    def reconfigure(self, loader: ScriptLoader, services: Services, jobs: JobsConfig) -> None:
        """Apply a reloaded config to jobs started from now on."""
        self._env = _Env(loader, services, jobs, self._env.hooks)
        self._pump()

    @property
    def loader(self) -> ScriptLoader:
        return self._env.loader

    @property
    def running_count(self) -> int:
        return len(self._running)

    @property
    def queued_count(self) -> int:
        return len(self._queue)

    def running_tasks(self) -> set[asyncio.Task[None]]:
        return {r.task for r in self._running.values()}

    @property
    def draining(self) -> bool:
        return self._draining

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> list[str]:
        """Mark jobs the last process left running as interrupted; resume the durable queue."""
        interrupted = self.store.interrupt_running(
            time.time(), "the daemon stopped while the job ran")
        for job_id in interrupted:
            log.warning("job_interrupted", job_id=job_id)
            job = self.store.get(job_id)
            if job is not None:
                self._call_hooks(job)
        for job in self.store.queued():
            self._queue[job.id] = job
        self._flusher = asyncio.create_task(self._flush_loop(), name="aftd-job-flusher")
        self._pump()
        return interrupted

    async def drain(self, grace_s: float) -> None:
        """Stop taking jobs, let running ones finish for ``grace_s``, then cancel the rest.

        Queued jobs stay queued in the store and run after the next start.
        """
        self._draining = True
        self._queue.clear()
        tasks = [r.task for r in self._running.values()]
        if tasks:
            log.info("draining", running=len(tasks), grace_s=grace_s)
            await asyncio.wait(tasks, timeout=grace_s)
        for run in list(self._running.values()):
            run.shutdown = True
            run.task.cancel()
        leftover = [r.task for r in self._running.values()]
        if leftover:
            await asyncio.wait(leftover, timeout=10)
        if self._flusher is not None:
            self._flusher.cancel()
        self._flush_all()

    # -- jobs --------------------------------------------------------------------------------
    def submit(self, script: ScriptInfo, params: Mapping[str, Any],
               idempotency_key: str | None = None) -> tuple[Job, bool]:
        if self._draining:
            raise Draining("the daemon is shutting down")
        if len(self._queue) >= self._env.jobs.max_queued and \
                len(self._running) >= self._env.jobs.max_concurrent:
            raise QueueFull(f"{len(self._queue)} jobs are already queued")
        job = Job(id=str(uuid.uuid4()), script_id=script.id, params=dict(params),
                  status=JobState.QUEUED, created_at=time.time(),
                  idempotency_key=idempotency_key)
        job, created = self.store.create(job)
        if created:
            log.info("job_queued", job_id=job.id, script_id=job.script_id)
            self._queue[job.id] = job
            self._pump()
        return self.get(job.id) or job, created

    def get(self, job_id: str) -> Job | None:
        run = self._running.get(job_id)
        if run is not None:
            return run.job
        return self._queue.get(job_id) or self.store.get(job_id)

    async def cancel(self, job_id: str) -> Job:
        queued = self._queue.pop(job_id, None)
        if queued is not None:
            self._finish(queued, JobState.CANCELLED, None, "cancelled before it started")
            return queued
        run = self._running.get(job_id)
        if run is None:
            job = self.store.get(job_id)
            if job is None:
                raise JobNotFound(job_id)
            raise JobConflict(f"job {job_id} is already {job.status}")
        run.cancel_requested = True
        run.task.cancel()
        # Give the script's finally blocks a moment so the answer shows the final state.
        await asyncio.wait({run.task}, timeout=10)
        return self.get(job_id) or run.job

    def _pump(self) -> None:
        while self._queue and len(self._running) < self._env.jobs.max_concurrent \
                and not self._draining:
            job_id = next(iter(self._queue))
            job = self._queue.pop(job_id)
            # A fresh context: a job must not inherit ids bound by whoever pumped the queue.
            task = asyncio.create_task(self._run(job, self._env), name=f"aftd-job-{job_id}",
                                       context=contextvars.Context())
            self._running[job_id] = _Run(job, task)

    async def _run(self, job: Job, env: _Env) -> None:
        joblog = JobLog(job.id, self.store, env.jobs.log_lines_per_job,
                        self.store.last_log_seq(job.id))
        self._logs[job.id] = joblog
        JOB_SINKS[job.id] = joblog
        structlog.contextvars.bind_contextvars(job_id=job.id, script_id=job.script_id)
        PROGRESS.set(job.progress)
        job.status, job.started_at = JobState.RUNNING, time.time()
        self.store.set_running(job.id, job.started_at)
        status, code, error = JobState.FAILED, None, None
        try:
            status, code, error = await self._execute(job, env)
            run = self._running.get(job.id)
            if run is not None and run.cancel_requested and status is JobState.SUCCEEDED:
                # The script swallowed the CancelledError; the user still cancelled it.
                status, code, error = JobState.CANCELLED, None, "cancelled"
        except asyncio.CancelledError:
            run = self._running.get(job.id)
            if run is not None and run.shutdown:
                status, error = JobState.INTERRUPTED, "the daemon shut down while the job ran"
            else:
                status, error = JobState.CANCELLED, "cancelled"
        finally:
            self._finish(job, status, code, error)
            JOB_SINKS.pop(job.id, None)
            joblog.flush()
            self._logs.pop(job.id, None)
            self._running.pop(job.id, None)
            self._pump()

    async def _execute(self, job: Job, env: _Env) -> tuple[JobState, int | None, str | None]:
        jlog = structlog.get_logger("aftd.job")
        jlog.info("job_started")
        try:
            info = env.loader.find(script_id=job.script_id)
            main = await asyncio.to_thread(env.loader.load_main, info)
        except ScriptError as exc:
            jlog.error("script_load_failed", error=str(exc))
            return JobState.FAILED, None, str(exc)
        ctx = JobContext(job.id, job.script_id, job.params, jlog, env.services)
        try:
            code = _exit_code(await main(ctx))
        except JobExit as exc:
            code = exc.code
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            jlog.error("job_exception", error=message,
                       traceback="".join(traceback.format_exception(exc)))
            return JobState.FAILED, None, message
        finally:
            await ctx.aclose()
        if code == 0:
            return JobState.SUCCEEDED, 0, None
        return JobState.FAILED, code, f"script exited with code {code}"

    def _finish(self, job: Job, status: JobState, code: int | None, error: str | None) -> None:
        job.status, job.exit_code = status, code
        job.error = scrub(error) if error else None
        job.finished_at = time.time()
        self.store.finish(job)
        log.info("job_finished", job_id=job.id, script_id=job.script_id, status=str(status),
                 exit_code=code, error=job.error,
                 duration_s=round(job.duration_s(job.finished_at) or 0.0, 3))
        self._call_hooks(job)

    def _call_hooks(self, job: Job) -> None:
        for hook in self._env.hooks:
            try:
                hook(job)
            except Exception:  # a hook failure must not lose the job's final state
                log.exception("job_end_hook_failed", job_id=job.id)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            self._flush_all()

    def _flush_all(self) -> None:
        try:
            for joblog in list(self._logs.values()):
                joblog.flush()
            self.store.save_progress(r.job for r in self._running.values())
        except Exception:
            log.exception("job_flush_failed")


def _exit_code(result: Any) -> int:
    if result is None:
        return 0
    if isinstance(result, bool):
        return 0 if result else 1
    if isinstance(result, int):
        return result
    return 0
