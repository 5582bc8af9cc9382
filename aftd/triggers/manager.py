"""The triggers of a daemon: their runtimes, and the fires that outlive a runtime.

The manager starts after the job store and the runner are ready and stops before the runner
drains. It owns what belongs to no single trigger's loop:

* the job end hook: a fired job's outcome is recorded on its fire row; a watch's ``after``
  step then runs (:mod:`aftd.triggers.after`), retried with backoff until it is done;
* recovery at start: fires claimed but not submitted (the daemon died or was draining) are
  submitted, jobs that ended while nobody listened get their outcome, owed ``after`` steps run;
* a retry loop that submits fires the runner could not take (queue full, store failing);
* with a job store shared by a fleet (``shared_jobs``), a look every few seconds at the jobs
  fired here that are still running: another host may run one, and its end hook runs there;
* reload: triggers added, removed or changed start and stop; the others keep running, and
  every fire row stays (state is keyed by the trigger's name, not by its runtime).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Collection, Coroutine, Sequence
from typing import Any

import structlog

from aftd.triggers.after import run_after
from aftd.triggers.base import Backoff, RunResult, TriggerContext, TriggerRuntime, TriggerStatus
from aftd.triggers.config import TriggerConfig
from aftd.triggers.files import key_digest
from aftd.triggers.ports import FiredJob, SubmitLater
from aftd.triggers.schedule_config import ScheduleTriggerConfig
from aftd.triggers.scheduler import ScheduleRuntime
from aftd.triggers.store import Fire
from aftd.triggers.watch_config import WatchTriggerConfig
from aftd.triggers.watcher import WatchRuntime
from aftd.vfs.base import PathNotFoundError

__all__ = ["RetryError", "TriggerManager", "UnknownTrigger"]

log = structlog.get_logger("aftd.triggers")

_RESUBMIT_EVERY_S = 2.0
# With a shared job store: how often, and at most how many, fired jobs are looked up.
_JOB_ENDS_EVERY_S = 5.0
_JOB_ENDS_BATCH = 500
_HOUSEKEEPING_EVERY_S = 3600.0
# Finished schedule fires are kept this long (they only matter for misfires within the grace).
_SCHEDULE_ROWS_KEEP_S = 7 * 86400.0
_AFTER_FIRST_S = 1.0
_AFTER_MAX_S = 300.0


class UnknownTrigger(LookupError):
    """No trigger of that name is configured."""


class RetryError(Exception):
    """``retry`` cannot fire the file again; the message says why."""


class TriggerManager:
    def __init__(self, ctx: TriggerContext, *, shared_jobs: bool = False) -> None:
        """``shared_jobs``: the job store is a fleet's, so a job fired here may run (and end)
        on another host."""
        self.ctx = ctx
        self.shared_jobs = shared_jobs
        self.runtimes: dict[str, TriggerRuntime] = {}
        self._configs: dict[str, TriggerConfig] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._after_owed: set[tuple[str, str]] = set()
        self._running = False

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self, triggers: Sequence[TriggerConfig]) -> None:
        """Start every trigger, and in the background recover what the last process left.

        Returns at once: the daemon's start-up (and its signal handlers) must not wait on
        the store for fires of the past."""
        self._running = True
        await self.apply(triggers)
        self._spawn(self._background(), "aftd-triggers-recover")

    async def _background(self) -> None:
        backoff = Backoff(_AFTER_FIRST_S, 60.0)
        while True:
            try:
                await self._recover()
                break
            except Exception as exc:  # a failing store: the triggers run meanwhile
                log.warning("trigger_recovery_failed", error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(backoff.next())
        self._spawn(self._resubmit_loop(), "aftd-triggers-resubmit")
        await self._housekeeping_loop()

    async def stop(self) -> None:
        """Stop every trigger and step; what is owed stays in the store for the next start."""
        self._running = False
        for runtime in list(self.runtimes.values()):
            await runtime.stop()
        tasks, self._tasks = set(self._tasks), set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def apply(self, triggers: Sequence[TriggerConfig],
                    changed_vfs: Collection[str] = ()) -> None:
        """Make the running triggers those configured (start, stop, restart the changed, and
        the watches of a VFS whose config changed: an open inotify watch names its old root)."""
        wanted = {t.name: t for t in triggers}
        restart = {n for n, r in self.runtimes.items()
                   if getattr(r.cfg, "vfs", None) in changed_vfs}
        for name in [n for n in self.runtimes if n not in wanted]:
            await self.runtimes.pop(name).stop()
            log.info("trigger_removed", trigger=name)
        for name, cfg in wanted.items():
            current = self.runtimes.get(name)
            if current is not None and current.cfg == cfg and name not in restart:
                continue
            if current is not None:
                await current.stop()
                log.info("trigger_changed", trigger=name)
            runtime = _runtime(cfg, self.ctx)
            self.runtimes[name] = runtime
            if self._running:
                runtime.start()
        self._configs = dict(wanted)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- operations -----------------------------------------------------------------------------
    def get(self, name: str) -> TriggerRuntime:
        runtime = self.runtimes.get(name)
        if runtime is None:
            raise UnknownTrigger(name)
        return runtime

    def statuses(self) -> list[TriggerStatus]:
        return [r.status() for r in self.runtimes.values()]

    def pending_files(self) -> dict[str, int]:
        return {n: r.pending_files() for n, r in self.runtimes.items()
                if isinstance(r, WatchRuntime)}

    async def pause(self, name: str, paused: bool) -> TriggerStatus:
        runtime = self.get(name)
        await runtime.set_paused(paused)
        return runtime.status()

    async def run_now(self, name: str) -> RunResult:
        return await self.get(name).run_now()

    async def retry(self, name: str, path: str) -> Fire:
        """Fire the failed file ``path`` of watch ``name`` again, at once."""
        runtime = self.get(name)
        if not isinstance(runtime, WatchRuntime):
            raise RetryError(f"trigger {name!r} is a {runtime.cfg.type}; retry takes a watch")
        failed = await self.ctx.store.fires(trigger=name, states=("failed",), path=path,
                                            newest=True)
        if not failed:
            raise RetryError(f"trigger {name!r} has no failed fire for {path!r}")
        fire = failed[0]
        try:
            info = await self.ctx.vfs(runtime.cfg.vfs).stat(path)
        except PathNotFoundError:
            raise RetryError(f"{path!r} is gone from vfs {runtime.cfg.vfs!r}") from None
        if (info.size, info.mtime) != (fire.size, fire.mtime):
            raise RetryError(f"{path!r} changed since it failed; the new version fires by itself "
                             "once stable")
        again = fire.with_state("claimed", attempt=fire.attempt + 1, job_id=None, error=None)
        await self.ctx.store.update([again], time.time())
        log.info("trigger_retry", trigger=name, path=path, attempt=again.attempt)
        done = await self.ctx.firing.submit(again)
        runtime.known.add(key_digest(fire.key))
        if done.state == "submitted":
            runtime.fired(done)
        await runtime.refresh_failed()
        return done

    # -- job outcomes ---------------------------------------------------------------------------
    async def on_job_end(self, job: FiredJob) -> None:
        """The runner's end hook: record how a fired job ended, then the step owed."""
        if job.trigger is None or job.idempotency_key is None:
            return
        if self.shared_jobs and job.trigger not in self._configs:
            return  # fired by a fleet host that has this trigger: it looks the end up there
        ok = job.status == "succeeded"
        error = None if ok else f"job {job.status}" + (f": {job.error}" if job.error else "")
        fire = await self.ctx.store.job_ended(job.idempotency_key, job.id,
                                              "succeeded" if ok else "failed", error,
                                              time.time())
        if fire is not None:
            await self._ended(fire)

    async def _ended(self, fire: Fire) -> None:
        if fire.state == "failed":
            log.warning("trigger_job_failed", trigger=fire.trigger, job_id=fire.job_id,
                        path=fire.path, error=fire.error)
        if fire.state == "succeeded" and self._running:
            self._owe_after(fire)
        runtime = self.runtimes.get(fire.trigger)
        if runtime is not None:
            await runtime.job_ended(fire)

    def _owe_after(self, fire: Fire) -> None:
        ident = (fire.trigger, fire.key)
        if ident not in self._after_owed:
            self._after_owed.add(ident)
            self._spawn(self._after(fire), f"aftd-trigger-after-{fire.trigger}")

    async def _after(self, fire: Fire) -> None:
        """The ``after`` step of one fire, retried with backoff until it is done."""
        backoff = Backoff(_AFTER_FIRST_S, _AFTER_MAX_S)
        cfg = self._configs.get(fire.trigger)
        watch = cfg if isinstance(cfg, WatchTriggerConfig) else None
        try:
            while True:
                try:
                    what = "left"
                    if fire.kind == "watch":
                        vfs = self.ctx.vfs(str(fire.params.get("vfs", "")))
                        what = await run_after(watch, fire, vfs)
                    await self.ctx.store.update([fire.with_state("done", error=None)],
                                                time.time())
                    log.debug("trigger_after_done", trigger=fire.trigger, path=fire.path,
                              result=what)
                    return
                except Exception as exc:
                    self._after_failed(fire, exc)
                await asyncio.sleep(backoff.next())
        finally:
            self._after_owed.discard((fire.trigger, fire.key))

    def _after_failed(self, fire: Fire, exc: Exception) -> None:
        runtime = self.runtimes.get(fire.trigger)
        if runtime is not None:
            runtime.failed(f"after step on {fire.path!r}", exc)
        else:
            log.error("trigger_after_failed", trigger=fire.trigger, path=fire.path,
                      error=str(exc))

    # -- recovery and background loops ----------------------------------------------------------
    async def _recover(self) -> None:
        store = self.ctx.store
        await self._settle_ended(1_000_000)
        for fire in await store.fires(states=("succeeded",), limit=1_000_000):
            self._owe_after(fire)
        await self._resubmit()

    async def _settle_ended(self, limit: int) -> None:
        """Record the outcome of fired jobs that ended while nobody here listened (before
        this process started, or on another host of the fleet); oldest first."""
        store = self.ctx.store
        for fire in await store.fires(states=("submitted",), limit=limit):
            job = await self.ctx.runner.get(fire.job_id or "")
            if job is None:
                gone = fire.with_state("failed", error="its job is no longer in the job store")
                await store.update([gone], time.time())
                await self._ended(gone)
            elif job.terminal:
                await self.on_job_end(job)

    async def _resubmit(self) -> None:
        """Submit fires claimed but not submitted (oldest first)."""
        claimed = await self.ctx.store.fires(states=("claimed",), limit=1000)
        if not claimed:
            return
        log.info("trigger_fires_resubmitted", count=len(claimed))
        done, _later = await self.ctx.firing.submit_many(claimed)
        for fire in done:
            runtime = self.runtimes.get(fire.trigger)
            if runtime is not None and fire.state == "submitted":
                runtime.fired(fire)

    async def _resubmit_loop(self) -> None:
        last_look = time.monotonic()
        while True:
            await asyncio.sleep(_RESUBMIT_EVERY_S)
            with contextlib.suppress(SubmitLater):
                try:
                    await self._resubmit()
                except Exception as exc:
                    log.warning("trigger_resubmit_failed", error=str(exc))
            if self.shared_jobs and time.monotonic() - last_look >= _JOB_ENDS_EVERY_S:
                last_look = time.monotonic()
                try:
                    await self._settle_ended(_JOB_ENDS_BATCH)
                except Exception as exc:
                    log.warning("trigger_job_ends_failed", error=str(exc))

    async def _housekeeping_loop(self) -> None:
        while True:
            try:
                n = await self.ctx.store.prune(("schedule", "run"),
                                               time.time() - _SCHEDULE_ROWS_KEEP_S)
                if n:
                    log.info("trigger_fires_pruned", count=n)
            except Exception as exc:
                log.warning("trigger_prune_failed", error=str(exc))
            await asyncio.sleep(_HOUSEKEEPING_EVERY_S)


def _runtime(cfg: TriggerConfig, ctx: TriggerContext) -> TriggerRuntime:
    if isinstance(cfg, ScheduleTriggerConfig):
        return ScheduleRuntime(cfg, ctx)
    if isinstance(cfg, WatchTriggerConfig):
        return WatchRuntime(cfg, ctx)
    raise TypeError(f"no runtime for trigger type {cfg.type!r}")
