"""The runner: a FIFO queue of job ids, bounded concurrency, cancel, timeouts, the life of a job.

How a job ends is decided exactly once (:meth:`Runner._settle`), whatever happens first: the
script returns or raises, a user cancels it (queued, picked but not started, running or
finishing), its timeout expires, or the daemon stops. Every job task has a done-callback that
frees its slot, so a task cancelled before its first step cannot hold a slot forever. The
decision is written to the store by a separate task that retries on store errors: a locked or
full database delays the record, never the next job.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import structlog

from aftd import executors
from aftd.config import JobsConfig
from aftd.jobs.joblog import JobLog
from aftd.jobs.model import Job, JobState
from aftd.jobs.storage import STORE_ERRORS, JobClaims, JobStorage
from aftd.jobs.timeouts import declared_timeout, describe_timeout, initial_timeout, script_timeout
from aftd.logging import JOB_SINKS
from aftd.loopwatch import bind_job
from aftd.progress import CURRENT as PROGRESS
from aftd.progress import CountedSink
from aftd.redact import scrub
from aftd.scripts.context import JobContext, Services
from aftd.scripts.execute import Outcome, run_script
from aftd.scripts.isolation import WorkerPool, wants_process
from aftd.scripts.loader import ScriptError, ScriptInfo, ScriptLoader, ScriptMain
from aftd.stdio import flush_job_output

__all__ = ["CANCEL_WAIT_S", "Draining", "JobConflict", "JobNotFound", "QueueFull", "Runner",
           "StoreUnavailable"]

log = structlog.get_logger("aftd.runner")

JobEndHook = Callable[[Job], Awaitable[None] | None]

# After the shutdown grace, cancelled jobs get this long to run their finally blocks; a job
# still running then is recorded interrupted and abandoned (the daemon exits anyway).
CANCEL_WAIT_S = 10.0
# How long shutdown waits for final job states and logs to reach the store.
STORE_FLUSH_S = 10.0
_FLUSH_INTERVAL_S = 0.5
_RETRY_FIRST_S = 0.5
_RETRY_MAX_S = 30.0
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


@dataclass
class _Run:
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


class _Final(NamedTuple):
    status: JobState
    code: int | None
    error: str | None


@dataclass
class _Env:
    """What a job was started with; a reload changes these for later jobs only."""

    loader: ScriptLoader
    services: Services
    jobs: JobsConfig
    hooks: list[JobEndHook] = field(default_factory=list)
    start_hooks: list[JobEndHook] = field(default_factory=list)


class Runner:
    def __init__(self, store: JobStorage, loader: ScriptLoader, services: Services,
                 jobs: JobsConfig, *, workers: WorkerPool | None = None,
                 claims: JobClaims | None = None) -> None:
        self.store = store
        # A fleet's shared queue (None: this host's own FIFO below is the queue).
        self._claims = claims
        self._claim_wake = asyncio.Event()
        self._claimer: asyncio.Task[None] | None = None
        self._env = _Env(loader, services, jobs)
        self._workers = workers  # runs ISOLATION = "process" scripts; None: all run inline
        self._queue: dict[str, None] = {}  # job ids, insertion-ordered: FIFO
        self._running: dict[str, _Run] = {}
        self._finishing: dict[str, Job] = {}  # decided, not yet stored
        self._persisting: set[asyncio.Task[None]] = set()
        self._cancels: set[asyncio.Task[Job]] = set()
        self._draining = False
        self._flusher: asyncio.Task[None] | None = None
        self._flush_now = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flush_failing = False

    # -- configuration -----------------------------------------------------------------------
    def add_end_hook(self, hook: JobEndHook) -> None:
        """Called with every job once its final state is stored (also for jobs the last
        process left running, at start-up); retried on store errors."""
        self._env.hooks.append(hook)

    def add_start_hook(self, hook: JobEndHook) -> None:
        """Called once a job is marked running, before its script is loaded; a failing hook
        is logged and the job runs anyway."""
        self._env.start_hooks.append(hook)

    def reconfigure(self, loader: ScriptLoader, services: Services, jobs: JobsConfig) -> None:
        """Apply a reloaded config to jobs started from now on."""
        self._env = _Env(loader, services, jobs, self._env.hooks, self._env.start_hooks)
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
        return job_id in self._finishing or job_id in self._running

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> list[str]:
        """Mark jobs the last process left running as interrupted; resume the durable queue."""
        self._loop = asyncio.get_running_loop()
        if self._claims is not None:
            # A fleet host settled what its last process left when it registered.
            self._flusher = asyncio.create_task(self._flush_loop(), name="aftd-job-flusher")
            self._claimer = asyncio.create_task(self._claim_loop(), name="aftd-job-claimer")
            return []
        interrupted = await self.store.interrupt_running(
            time.time(), "the daemon stopped while the job ran")
        for job_id in interrupted:
            log.warning("job_interrupted", job_id=job_id)
            job = await self.store.get(job_id)
            if job is not None:
                await self._run_hooks(job)
        for job_id in await self.store.queued_ids():
            self._queue[job_id] = None
        self._flusher = asyncio.create_task(self._flush_loop(), name="aftd-job-flusher")
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
            self._settle(run, _Final(JobState.INTERRUPTED, None,
                                     "the daemon shut down and the job did not stop when "
                                     "cancelled"))
        if self._flusher is not None:
            self._flusher.cancel()
        await self._settle_store(STORE_FLUSH_S)

    async def _settle_store(self, timeout_s: float) -> None:
        with_timeout = [asyncio.create_task(self._flush_all())]
        pending = set(self._persisting) | set(with_timeout)
        _, pending = await asyncio.wait(pending, timeout=timeout_s)
        if pending:
            log.error("job_states_not_stored", count=len(pending),
                      note="they are recorded interrupted at the next start")

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
            return _snapshot(run.job)
        if job_id in self._finishing:
            return _snapshot(self._finishing[job_id])
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
        run = _Run(job_id, cancel_requested=True)
        run.job = await self.store.get(job_id)  # a read: not delayed by a locked writer
        if run.job is None:
            raise JobNotFound(job_id)
        self._settle(run, _Final(JobState.CANCELLED, None, "cancelled before it started"))
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
        delay = _RETRY_FIRST_S
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
                delay = min(delay * 2, _RETRY_MAX_S)
                continue
            delay = _RETRY_FIRST_S
            for job in jobs:
                self._start(_Run(job.id, job=job, claimed=True, started=True))
            if len(jobs) == free:
                self._claim_wake.set()  # there may be more

    def _start(self, run: _Run) -> None:
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
            self._start(_Run(job_id))

    def _task_done(self, run: _Run, task: asyncio.Task[None]) -> None:
        """Always called, even for a task cancelled before its first step: frees the slot."""
        if not run.settled:
            if task.cancelled():
                final = self._cancel_outcome(run)
            else:
                exc = task.exception()
                final = _Final(JobState.FAILED, None, f"internal error: {exc!r}")
            self._settle(run, final)
        self._running.pop(run.job_id, None)
        JOB_SINKS.pop(run.job_id, None)
        self._pump()

    def _cancel_outcome(self, run: _Run) -> _Final:
        if run.shutdown:
            return _Final(JobState.INTERRUPTED, None, "the daemon shut down while the job ran")
        return _Final(JobState.CANCELLED, None, "cancelled")

    async def _run(self, run: _Run, env: _Env) -> None:
        final = _Final(JobState.FAILED, None, "the job did not start")
        try:
            job = await self._begin(run, env)
            if job is None:
                return
            final = await self._execute(job, env, run)
            if run.cancel_requested and not _is_timeout(final):
                # The script swallowed the CancelledError; the user still cancelled it.
                final = self._cancel_outcome(run)
        except asyncio.CancelledError:
            final = self._cancel_outcome(run)
        except BaseException as exc:  # never let anything escape into the event loop
            log.exception("job_internal_error", job_id=run.job_id)
            final = _Final(JobState.FAILED, None, f"internal error: {type(exc).__name__}: {exc}")
        finally:
            flush_job_output(run.job_id)  # a last line printed without a newline
            if run.shutdown and not run.started:
                run.settled = True  # never started: it stays queued for the next start
            else:
                self._settle(run, final)

    async def _begin(self, run: _Run, env: _Env) -> Job | None:
        """Load the job from the store and mark it running; None if it must not run."""
        job = run.job if run.claimed else await self.store.get(run.job_id)
        if job is None or (job.status is not JobState.QUEUED and not run.claimed):
            run.settled = True  # gone or already ended (e.g. cancelled meanwhile)
            return None
        joblog = JobLog(job.id, self.store, env.jobs.log_lines_per_job,
                        await self.store.last_log_seq(job.id), self._wake_flusher)
        run.job, run.joblog, run.saved = job, joblog, _progress_of(job)  # as stored
        JOB_SINKS[job.id] = joblog
        structlog.contextvars.bind_contextvars(job_id=job.id, script_id=job.script_id)
        bind_job(job.id, job.script_id)  # names the job if its code blocks the event loop
        PROGRESS.set(CountedSink(job.progress))
        if run.claimed:  # the claim marked it running
            return job
        job.status, job.started_at = JobState.RUNNING, time.time()
        run.started = True
        started_at = job.started_at
        await self._retry("start", job.id, lambda: self.store.set_running(job.id, started_at))
        for hook in env.start_hooks:
            try:
                await _call_hook(hook, job)
            except Exception:  # its feature loses a guarantee; the job is not held up
                log.exception("job_start_hook_failed", job_id=job.id)
        return job

    async def _execute(self, job: Job, env: _Env, run: _Run) -> _Final:
        """Load the script and run it under the job's timeout."""
        jlog = structlog.get_logger("aftd.job")
        jlog.info("job_started")
        loop = asyncio.get_running_loop()
        begun = loop.time()
        limit = initial_timeout(job.timeout_s, env.jobs.timeout_s)
        try:
            async with asyncio.timeout_at(_deadline(begun, limit)) as tm:
                try:
                    # stat() and a parse of a changed file: not on the event loop; found and
                    # loaded in one trip to the thread.
                    info, main = await executors.run(executors.SCRIPTS, functools.partial(
                        _find_and_load, env.loader, job.script_id, self._workers))
                    if job.timeout_s is None:
                        limit = script_timeout(main, limit) if main is not None \
                            else declared_timeout(info, limit)
                        tm.reschedule(_deadline(begun, limit))
                except ScriptError as exc:
                    jlog.error("script_load_failed", error=str(exc))
                    return _Final(JobState.FAILED, None, str(exc))
                if main is None:
                    assert self._workers is not None
                    outcome = await self._workers.run(job, info, jlog, env.services)
                else:
                    ctx = JobContext(job.id, job.script_id, job.params, jlog, env.services)
                    outcome = await run_script(main, ctx, jlog)
        except TimeoutError:
            if not tm.expired():
                raise
            return self._timed_out(jlog, limit)
        if tm.expired():  # the script swallowed the cancellation and returned
            return self._timed_out(jlog, limit)
        return _from_outcome(outcome)

    def _timed_out(self, jlog: Any, limit: float | None) -> _Final:
        message = f"job {_TIMED_OUT_MARK} {describe_timeout(limit)}"
        jlog.error("job_timed_out", timeout_s=limit)
        return _Final(JobState.FAILED, None, message)

    def _settle(self, run: _Run, final: _Final) -> None:
        """Decide the job's end (once) and hand it to a task that stores it, retrying."""
        if run.settled:
            return
        run.settled = True
        job = run.job
        if job is not None:
            _apply(job, final)
            _log_finished(job)
            if run.joblog is None:
                self._finishing[job.id] = job
                run.visible.set()
        task = asyncio.create_task(self._persist(run, job, final),
                                   name=f"aftd-job-final-{run.job_id}",
                                   context=contextvars.Context())
        self._persisting.add(task)
        task.add_done_callback(self._persisting.discard)

    async def _persist(self, run: _Run, job: Job | None, final: _Final) -> None:
        job_id = run.job_id
        try:
            if job is None:  # ended before it was loaded (cancelled while queued or picked)
                job = await self._retry("load", job_id, lambda: self.store.get(job_id))
                if job is None or job.terminal:
                    return
                _apply(job, final)
                _log_finished(job)
            stored = run.joblog is None or await _try_drain(run.joblog)
            self._finishing[job_id] = job
            run.visible.set()  # seen ended now; a follower still waits for every line
            if not stored and run.joblog is not None:
                # Retried like the final state, never dropped (shutdown bounds the wait).
                try:
                    await self._retry("log", job_id, run.joblog.drain)
                except Exception:  # not a store error: the final state must still be stored
                    log.exception("job_log_flush_failed", job_id=job_id)
            await self._retry("finish", job_id, functools.partial(self.store.finish, job))
            await self._run_hooks(job)
        finally:
            self._finishing.pop(job_id, None)
            run.visible.set()

    async def _retry(self, step: str, job_id: str, fn: Callable[[], Awaitable[Any]]) -> Any:
        """``fn()`` until it stops failing with a store error (a locked or full database)."""
        delay = _RETRY_FIRST_S
        while True:
            try:
                return await fn()
            except STORE_ERRORS as exc:
                log.warning("job_store_retry", step=step, job_id=job_id, error=str(exc),
                            retry_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX_S)

    async def _run_hooks(self, job: Job) -> None:
        for hook in self._env.hooks:
            try:
                await self._retry("end_hook", job.id, functools.partial(_call_hook, hook, job))
            except Exception:  # a broken hook must not lose the job's final state
                log.exception("job_end_hook_failed", job_id=job.id)

    # -- background flushing -----------------------------------------------------------------
    def _wake_flusher(self) -> None:
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
            moved = [(r, _progress_of(r.job)) for r in list(self._running.values())
                     if r.job is not None and _progress_of(r.job) != r.saved]
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


_TIMED_OUT_MARK = "timed out after"


def _is_timeout(final: _Final) -> bool:
    return final.error is not None and _TIMED_OUT_MARK in final.error and \
        final.status is JobState.FAILED


def _progress_of(job: Job) -> tuple[int, int, int, int]:
    p = job.progress
    return p.files_done, p.files_total, p.bytes_done, p.bytes_total


def _find_and_load(loader: ScriptLoader, script_id: str,
                   workers: WorkerPool | None) -> tuple[ScriptInfo, ScriptMain | None]:
    """The script and its ``main``; None for a script that runs in a worker process
    (``ISOLATION = "process"``), which is not loaded here."""
    info = loader.find(script_id=script_id)
    return info, None if wants_process(info, workers) else loader.load_main(info)


def _deadline(begun: float, limit: float | None) -> float | None:
    return None if limit is None else begun + limit


def _from_outcome(outcome: Outcome) -> _Final:
    return _Final(JobState(outcome.status), outcome.exit_code, outcome.error)


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


def _snapshot(job: Job) -> Job:
    """A copy of a live job that the runner's later changes leave alone."""
    return replace(job, progress=replace(job.progress))


def _apply(job: Job, final: _Final) -> None:
    job.status, job.exit_code = final.status, final.code
    job.error = scrub(final.error) if final.error else None
    job.finished_at = time.time()


def _log_finished(job: Job) -> None:
    dur = job.duration_s(job.finished_at or time.time()) or 0.0
    log.info("job_finished", job_id=job.id, script_id=job.script_id, status=str(job.status),
             exit_code=job.exit_code, error=job.error,
             duration_s=round(dur, 3) if math.isfinite(dur) else None)


async def _call_hook(hook: JobEndHook, job: Job) -> None:
    result = hook(job)
    if result is not None:
        await result


def _forget(tasks: set[asyncio.Task[Job]]) -> Callable[[asyncio.Task[Job]], None]:
    def done(task: asyncio.Task[Job]) -> None:
        tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("job_cancel_failed", error=str(task.exception()))
    return done


def _placeholder(job_id: str) -> Job:
    return Job(id=job_id, script_id="", params={}, status=JobState.CANCELLED,
               created_at=time.time())
