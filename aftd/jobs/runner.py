"""The runner: a FIFO queue of job ids, bounded concurrency, cancel, timeouts, the life of a job.

How a job ends is decided exactly once (:meth:`aftd.jobs.recorder.Recorder.settle`), whatever
happens first: the script returns or raises, a user cancels it (queued, picked but not started,
running or finishing), its timeout expires, or the daemon stops. Every job task has a
done-callback that frees its slot, so a task cancelled before its first step cannot hold a slot
forever. The decision is written to the store by a separate task that retries on store errors: a
locked or full database delays the record, never the next job."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from aftd.config import JobsConfig
from aftd.jobs.execution import execute, is_timeout
from aftd.jobs.joblog import JobLog
from aftd.jobs.model import Job, JobState
from aftd.jobs.recorder import RETRY_FIRST_S, RETRY_MAX_S, STORE_FLUSH_S, Recorder
from aftd.jobs.runstate import Env, Final, JobEndHook, Run, call_hook, progress_of, snapshot
from aftd.jobs.storage import STORE_ERRORS, JobClaims, JobStorage
from aftd.logging import JOB_SINKS
from aftd.loopwatch import bind_job
from aftd.progress import CURRENT as PROGRESS
from aftd.progress import CountedSink
from aftd.scripts.context import Services
from aftd.scripts.isolation import WorkerPool
from aftd.scripts.loader import ScriptInfo, ScriptLoader
from aftd.stdio import flush_job_output

__all__ = ["CANCEL_WAIT_S", "Draining", "JobConflict", "JobNotFound", "QueueFull", "Runner",
           "StoreUnavailable"]

log = structlog.get_logger("aftd.runner")

# After the shutdown grace, cancelled jobs get this long to run their finally blocks; a job
# still running then is recorded interrupted and abandoned (the daemon exits anyway).
CANCEL_WAIT_S = 10.0
# A fleet host looks for queued jobs this often even when no NOTIFY woke it (one was missed
# while its listening connection was down).
CLAIM_POLL_S = 2.0
# A cancel of a job running on another host waits this long for its final state.
REMOTE_CANCEL_WAIT_S = 10.0


class Draining(Exception):
    """The daemon is shutting down and accepts no new jobs."""


class QueueFull(Exception):
    """``jobs.max_queued`` jobs are already waiting."""


class StoreUnavailable(Exception):
    """The job store could not record the request (locked too long, disk full ...)."""


class JobNotFound(Exception):
    pass


class JobConflict(Exception):
    pass


class Runner:
    def __init__(self, store: JobStorage, loader: ScriptLoader, services: Services,
                 jobs: JobsConfig, *, workers: WorkerPool | None = None,
                 claims: JobClaims | None = None) -> None:
        self.store = store
        # A fleet's shared queue (None: this host's own FIFO below is the queue).
        self._claims = claims
        self._claim_wake = asyncio.Event()
        self._claimer: asyncio.Task[None] | None = None
        self._env = Env(loader, services, jobs)
        self._workers = workers  # runs ISOLATION = "process" scripts; None: all run inline
        self._queue: dict[str, None] = {}  # job ids, insertion-ordered: FIFO
        self._running: dict[str, Run] = {}
        self._recorder = Recorder(store, self._running)
        self._cancels: set[asyncio.Task[Job]] = set()
        self._draining = False

    # -- configuration -----------------------------------------------------------------------
    def add_end_hook(self, hook: JobEndHook) -> None:
        """Called with every job once its final state is stored (also for jobs the last
        process left running, at start-up); retried on store errors."""
        self._recorder.hooks.append(hook)

    def add_start_hook(self, hook: JobEndHook) -> None:
        """Called once a job is marked running, before its script is loaded; a failing hook
        is logged and the job runs anyway."""
        self._env.start_hooks.append(hook)

    def reconfigure(self, loader: ScriptLoader, services: Services, jobs: JobsConfig) -> None:
        """Apply a reloaded config to jobs started from now on."""
        self._env = Env(loader, services, jobs, self._env.start_hooks)
        self._pump()

    @property
    def loader(self) -> ScriptLoader:
        return self._env.loader

    @property
    def running_count(self) -> int:
        return len(self._running)

    @property
    def queued_count(self) -> int:
        if self._claims is not None:  # the fleet's queue, as last counted
            return self.store.counts().get(str(JobState.QUEUED), 0)
        return len(self._queue)

    def running_tasks(self) -> set[asyncio.Task[None]]:
        return {r.task for r in self._running.values() if r.task is not None}

    @property
    def draining(self) -> bool:
        return self._draining

    def in_flight(self, job_id: str) -> bool:
        """True while the job runs or its final state is not yet in the store (a log follower
        waits for this to end, so it has every line the store will have)."""
        return job_id in self._recorder.finishing or job_id in self._running

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> list[str]:
        """Mark jobs the last process left running as interrupted; resume the durable queue."""
        self._recorder.bind_loop()
        if self._claims is not None:
            # A fleet host settled what its last process left when it registered.
            self._recorder.start_flusher()
            self._claimer = asyncio.create_task(self._claim_loop(), name="aftd-job-claimer")
            return []
        interrupted = await self.store.interrupt_running(
            time.time(), "the daemon stopped while the job ran")
        for job_id in interrupted:
            log.warning("job_interrupted", job_id=job_id)
            job = await self.store.get(job_id)
            if job is not None:
                await self._recorder.run_hooks(job)
        for job_id in await self.store.queued_ids():
            self._queue[job_id] = None
        self._recorder.start_flusher()
        self._pump()
        return interrupted

    async def drain(self, grace_s: float, cancel_wait_s: float = CANCEL_WAIT_S) -> None:
        """Stop taking jobs, let running ones finish for ``grace_s``, cancel the rest and give
        them ``cancel_wait_s``; a job still running after that is recorded interrupted and left
        behind. Queued jobs stay queued in the store and run after the next start."""
        self._draining = True
        self._queue.clear()
        if self._claimer is not None:  # let a claim in flight start what it took
            self._claim_wake.set()
            await asyncio.wait({self._claimer}, timeout=CANCEL_WAIT_S)
        tasks = self.running_tasks()
        if tasks:
            log.info("draining", running=len(tasks), grace_s=grace_s)
            await asyncio.wait(tasks, timeout=grace_s)
        for run in list(self._running.values()):
            run.shutdown = True
            if run.task is not None:
                run.task.cancel()
        leftover = self.running_tasks()
        if leftover:
            await asyncio.wait(leftover, timeout=cancel_wait_s)
        for run in list(self._running.values()):
            log.error("job_ignored_cancel", job_id=run.job_id, waited_s=cancel_wait_s)
            self._recorder.settle(run, Final(JobState.INTERRUPTED, None,
                                     "the daemon shut down and the job did not stop when "
                                     "cancelled"))
        await self._recorder.close(STORE_FLUSH_S)

    # -- jobs --------------------------------------------------------------------------------
    async def submit(self, script: ScriptInfo, params: Mapping[str, Any],
                     idempotency_key: str | None = None,
                     timeout_s: float | None = None,
                     trigger: str | None = None,
                     host_tags: tuple[str, ...] = ()) -> tuple[Job, bool]:
        """Queue a job (the API and triggers alike); ``trigger`` names the trigger that fired
        it. With an ``idempotency_key`` already used, the job created then is returned."""
        if self._draining:
            raise Draining("the daemon is shutting down")
        if self.queued_count >= self._env.jobs.max_queued and \
                len(self._running) >= self._env.jobs.max_concurrent:
            raise QueueFull(f"{self.queued_count} jobs are already queued")
        job = Job(id=str(uuid.uuid4()), script_id=script.id, params=dict(params),
                  status=JobState.QUEUED, created_at=time.time(),
                  idempotency_key=idempotency_key, timeout_s=timeout_s, trigger=trigger,
                  host_tags=tuple(sorted(set(host_tags))))
        try:
            job, created = await self.store.create(job)
        except STORE_ERRORS as exc:
            log.error("job_store_failed", step="create", error=str(exc))
            raise StoreUnavailable(f"the job store cannot record the job: {exc}") from None
        if created:
            log.info("job_queued", job_id=job.id, script_id=job.script_id, trigger=trigger)
            if self._claims is not None:
                self._claim_wake.set()
            elif not self._draining:  # a job accepted while a drain began runs after restart
                self._queue[job.id] = None
                self._pump()
            if job.id in self._queue:  # still waiting: the record just stored is current
                return job, created
        return (await self.get(job.id)) or job, created

    async def get(self, job_id: str) -> Job | None:
        """The job as it is now: a copy, so a caller that awaits before it uses the job (the
        API reads the job's report first) never sees an end decided after this check, whose
        log lines may not be stored yet."""
        run = self._running.get(job_id)
        # A decided end is shown only once it is visible (its log lines stored): between the
        # decision and the task's done-callback the run is still listed here.
        if run is not None and run.job is not None and \
                (not run.job.terminal or run.visible.is_set()):
            return snapshot(run.job)
        finishing = self._recorder.finishing
        if job_id in finishing:
            return snapshot(finishing[job_id])
        return await self.store.get(job_id)

    async def cancel(self, job_id: str) -> Job:
        if self._claims is not None and job_id not in self._running:
            return await self._cancel_in_fleet(self._claims, job_id)
        if job_id in self._queue:
            return await self._cancel_queued(job_id)
        run = self._running.get(job_id)
        if run is None or run.settled:
            job = await self.get(job_id)
            if job is None:
                raise JobNotFound(job_id)
            what = "being cancelled" if job.status is JobState.QUEUED else str(job.status)
            raise JobConflict(f"job {job_id} is already {what}")
        run.cancel_requested = True
        if run.task is not None:
            run.task.cancel()
            # Give the script's finally blocks a moment so the answer shows the final state.
            waiter = asyncio.create_task(run.visible.wait())
            await asyncio.wait({waiter}, timeout=10)
            waiter.cancel()
        return (await self.get(job_id)) or _placeholder(job_id)

    async def _cancel_queued(self, job_id: str) -> Job:
        del self._queue[job_id]  # from here no pump can pick it
        run = Run(job_id, cancel_requested=True)
        run.job = await self.store.get(job_id)  # a read: not delayed by a locked writer
        if run.job is None:
            raise JobNotFound(job_id)
        self._recorder.settle(run, Final(JobState.CANCELLED, None, "cancelled before it started"))
        return run.job

    async def _cancel_in_fleet(self, claims: JobClaims, job_id: str) -> Job:
        """Cancel a job this host does not run: queued (cancelled in the store) or running on
        another host (told through the store; its final state is awaited a while)."""
        try:
            req = await claims.request_cancel(job_id, time.time())
        except STORE_ERRORS as exc:
            raise StoreUnavailable(f"the job store cannot record the cancel: {exc}") from None
        if req.outcome == "unknown":
            raise JobNotFound(job_id)
        if req.outcome == "finished":
            status = req.job.status if req.job is not None else "finished"
            raise JobConflict(f"job {job_id} is already {status}")
        if req.outcome == "cancelled":
            log.info("job_cancelled_in_queue", job_id=job_id)
            return req.job or _placeholder(job_id)
        log.info("job_cancel_requested", job_id=job_id, host=req.host)
        deadline = time.monotonic() + REMOTE_CANCEL_WAIT_S
        while time.monotonic() < deadline:
            job = await self.store.get(job_id)
            if job is None or job.terminal:
                break
            await asyncio.sleep(0.1)
        return (await self.store.get(job_id)) or _placeholder(job_id)

    def cancel_local(self, job_id: str) -> None:
        """Another host asked to cancel ``job_id``: cancel it if it runs here."""
        run = self._running.get(job_id)
        if run is not None and not run.settled and not run.cancel_requested:
            task = asyncio.create_task(self.cancel(job_id), name=f"aftd-cancel-{job_id}")
            self._cancels.add(task)  # kept referenced until done
            task.add_done_callback(_forget(self._cancels))

    def wake_claims(self) -> None:
        """A job was queued somewhere in the fleet (or the store is reachable again)."""
        self._claim_wake.set()

    async def abandon_all(self) -> None:
        """This host lost its fleet lease: its jobs were recorded interrupted by the host that
        took it over. Stop them; their own final writes are fenced off by the store."""
        runs = list(self._running.values())
        for run in runs:
            run.shutdown = True
            if run.task is not None:
                run.task.cancel()
        tasks = {r.task for r in runs if r.task is not None}
        if tasks:
            await asyncio.wait(tasks, timeout=CANCEL_WAIT_S)

    async def _claim_loop(self) -> None:
        assert self._claims is not None
        delay = RETRY_FIRST_S
        while not self._draining:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._claim_wake.wait(), CLAIM_POLL_S)
            self._claim_wake.clear()
            free = self._env.jobs.max_concurrent - len(self._running)
            if free <= 0 or self._draining:
                continue
            try:
                jobs = await self._claims.claim(free, time.time())
            except STORE_ERRORS as exc:
                log.warning("job_claim_failed", error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            delay = RETRY_FIRST_S
            for job in jobs:
                self._start(Run(job.id, job=job, claimed=True, started=True))
            if len(jobs) == free:
                self._claim_wake.set()  # there may be more

    def _start(self, run: Run) -> None:
        self._running[run.job_id] = run
        # A fresh context: a job must not inherit ids bound by whoever pumped the queue.
        run.task = asyncio.create_task(self._run(run, self._env), name=f"aftd-job-{run.job_id}",
                                       context=contextvars.Context())
        run.task.add_done_callback(functools.partial(self._task_done, run))

    def _pump(self) -> None:
        if self._claims is not None:
            self._claim_wake.set()
            return
        while self._queue and len(self._running) < self._env.jobs.max_concurrent \
                and not self._draining:
            job_id = next(iter(self._queue))
            del self._queue[job_id]
            self._start(Run(job_id))

    def _task_done(self, run: Run, task: asyncio.Task[None]) -> None:
        """Always called, even for a task cancelled before its first step: frees the slot."""
        if not run.settled:
            if task.cancelled():
                final = self._cancel_outcome(run)
            else:
                exc = task.exception()
                final = Final(JobState.FAILED, None, f"internal error: {exc!r}")
            self._recorder.settle(run, final)
        self._running.pop(run.job_id, None)
        JOB_SINKS.pop(run.job_id, None)
        self._pump()

    def _cancel_outcome(self, run: Run) -> Final:
        if run.shutdown:
            return Final(JobState.INTERRUPTED, None, "the daemon shut down while the job ran")
        return Final(JobState.CANCELLED, None, "cancelled")

    async def _run(self, run: Run, env: Env) -> None:
        final = Final(JobState.FAILED, None, "the job did not start")
        try:
            job = await self._begin(run, env)
            if job is None:
                return
            final = await execute(job, env, self._workers)
            if run.cancel_requested and not is_timeout(final):
                # The script swallowed the CancelledError; the user still cancelled it.
                final = self._cancel_outcome(run)
        except asyncio.CancelledError:
            final = self._cancel_outcome(run)
        except BaseException as exc:  # never let anything escape into the event loop
            log.exception("job_internal_error", job_id=run.job_id)
            final = Final(JobState.FAILED, None, f"internal error: {type(exc).__name__}: {exc}")
        finally:
            flush_job_output(run.job_id)  # a last line printed without a newline
            if run.shutdown and not run.started:
                run.settled = True  # never started: it stays queued for the next start
            else:
                self._recorder.settle(run, final)

    async def _begin(self, run: Run, env: Env) -> Job | None:
        """Load the job from the store and mark it running; None if it must not run."""
        job = run.job if run.claimed else await self.store.get(run.job_id)
        if job is None or (job.status is not JobState.QUEUED and not run.claimed):
            run.settled = True  # gone or already ended (e.g. cancelled meanwhile)
            return None
        joblog = JobLog(job.id, self.store, env.jobs.log_lines_per_job,
                        await self.store.last_log_seq(job.id), self._recorder.wake_flusher)
        run.job, run.joblog, run.saved = job, joblog, progress_of(job)  # as stored
        JOB_SINKS[job.id] = joblog
        structlog.contextvars.bind_contextvars(job_id=job.id, script_id=job.script_id)
        bind_job(job.id, job.script_id)  # names the job if its code blocks the event loop
        PROGRESS.set(CountedSink(job.progress))
        if run.claimed:  # the claim marked it running
            return job
        job.status, job.started_at = JobState.RUNNING, time.time()
        run.started = True
        started_at = job.started_at
        await self._recorder.retry("start", job.id,
                                   lambda: self.store.set_running(job.id, started_at))
        for hook in env.start_hooks:
            try:
                await call_hook(hook, job)
            except Exception:  # its feature loses a guarantee; the job is not held up
                log.exception("job_start_hook_failed", job_id=job.id)
        return job

def _forget(tasks: set[asyncio.Task[Job]]) -> Callable[[asyncio.Task[Job]], None]:
    def done(task: asyncio.Task[Job]) -> None:
        tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("job_cancel_failed", error=str(task.exception()))
    return done


def _placeholder(job_id: str) -> Job:
    return Job(id=job_id, script_id="", params={}, status=JobState.CANCELLED,
               created_at=time.time())
