"""A schedule trigger: a job at each due time (:mod:`aftd.triggers.schedule`), once.

Each due time is claimed in the store under its instant before its job is submitted, so it
fires once across restarts (and across a fleet sharing the store). At start, the latest due
time not claimed yet runs once if it is at most ``misfire_grace_s`` old (the daemon was down
when it was due) and is skipped otherwise; due times from before the trigger's definition took
effect (added, changed, resumed) never run. A due time reached more than ``misfire_grace_s``
late (a suspended host, a clock jump; 5 s at least) is skipped too.

``overlap`` decides what a fire does while an earlier fire's job is still queued or running:
``skip`` records the due time as skipped, ``queue`` keeps it ``waiting`` and submits it when the
earlier job ends (in order; at most ``MAX_WAITING`` wait, later ones are skipped), ``allow``
submits it at once.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import structlog

from aftd.triggers.base import RunResult, TriggerContext, TriggerRuntime, retry_store
from aftd.triggers.ports import SubmitLater
from aftd.triggers.schedule import Schedule, iso
from aftd.triggers.schedule_config import ScheduleTriggerConfig
from aftd.triggers.store import Fire

__all__ = ["MAX_WAITING", "ScheduleRuntime", "due_key"]

log = structlog.get_logger("aftd.triggers")

MAX_WAITING = 100
# The loop re-reads the clock at least this often, so a wall-clock jump is noticed.
_MAX_SLEEP_S = 30.0
# A due time reached late by less than this is not a misfire, whatever misfire_grace_s says:
# waking up always takes a moment, and a busy event loop a little more.
_LATE_TOLERANCE_S = 5.0


def due_key(due: float) -> str:
    return f"due:{iso(due)}"


class ScheduleRuntime(TriggerRuntime):
    cfg: ScheduleTriggerConfig

    def __init__(self, cfg: ScheduleTriggerConfig, ctx: TriggerContext) -> None:
        super().__init__(cfg, ctx)
        self.schedule = Schedule(cron=cfg.cron, every_s=cfg.every_s, timezone=cfg.timezone)
        self._next: float | None = None

    def describe(self) -> dict[str, Any]:
        return {"cron": self.cfg.cron or None, "everyS": self.cfg.every_s,
                "timezone": self.cfg.timezone, "overlap": self.cfg.overlap}

    def next_fire_at(self) -> float | None:
        return self._next

    # -- the loop -------------------------------------------------------------------------------
    async def run(self) -> None:
        await self._catch_up()
        cursor = time.time()
        while True:
            if self.paused:
                self._next = None
                await self.wait_wake(None)
                cursor = time.time()
                continue
            due = self.schedule.next_after(cursor)
            self._next = due
            if await self._sleep_until(due):
                continue  # woken: paused, resumed or a queued fire may go
            await self._fire_due(due)
            cursor = due

    async def _sleep_until(self, due: float) -> bool:
        """True when woken before ``due``."""
        while True:
            remaining = due - time.time()
            if remaining <= 0:
                return False
            if await self.wait_wake(min(remaining, _MAX_SLEEP_S)):
                await self.release_waiting()
                return True

    async def _catch_up(self) -> None:
        """At start: submit fires left waiting, then run the latest missed due time once."""
        await self.release_waiting()
        if self.paused:
            return
        now = time.time()
        last = self.schedule.last_at_or_before(now)
        if last <= self.since:
            return
        if await retry_store(self.name, "misfire", lambda: self.ctx.store.is_claimed(
                self.name, due_key(last))):
            return
        if now - last > self.cfg.misfire_grace_s:
            log.warning("trigger_misfire_skipped", trigger=self.name, due=iso(last),
                        late_s=round(now - last, 1), misfire_grace_s=self.cfg.misfire_grace_s)
            return
        log.info("trigger_misfire_run", trigger=self.name, due=iso(last),
                 late_s=round(now - last, 1))
        await self._fire_due(last)

    async def _fire_due(self, due: float) -> None:
        late = time.time() - due
        if late > max(self.cfg.misfire_grace_s, _LATE_TOLERANCE_S):
            log.warning("trigger_misfire_skipped", trigger=self.name, due=iso(due),
                        late_s=round(late, 1), misfire_grace_s=self.cfg.misfire_grace_s)
            return
        try:
            await self.fire(self._fire_of(due_key(due), "schedule", due))
        except Exception as exc:  # a failing store: this due time is lost, the next one runs
            self.failed("fire", exc)

    def _fire_of(self, key: str, kind: str, when: float) -> Fire:
        params = {**self.cfg.params, "trigger": self.name, "scheduledAt": iso(when)}
        return Fire(trigger=self.name, key=key, kind=kind, script=self.cfg.script,
                    params=params, due_at=when)

    async def run_now(self) -> RunResult:
        now = time.time()
        fire = self._fire_of(f"run:{iso(now)}:{uuid.uuid4().hex[:12]}", "run", now)
        return await self.fire(fire)

    # -- one fire -------------------------------------------------------------------------------
    async def fire(self, fire: Fire) -> RunResult:
        """Claim ``fire`` under the overlap policy and submit it if it may run now."""
        state, why = await self._overlap_state()
        stored = fire.with_state(state, error=why)
        won = await self.ctx.store.claim([stored], time.time())
        if not won:
            return RunResult("skipped", detail="this due time was claimed already")
        if state == "skipped":
            log.info("trigger_fire_skipped", trigger=self.name, key=fire.key, reason=why)
            return RunResult("skipped", detail=why or "")
        if state == "waiting":
            log.info("trigger_fire_queued", trigger=self.name, key=fire.key)
            return RunResult("queued", detail=why or "")
        return await self._submit(won[0])

    async def _submit(self, fire: Fire) -> RunResult:
        try:
            done = await self.ctx.firing.submit(fire)
        except SubmitLater as exc:
            return RunResult("queued", detail=f"submitted when the daemon takes jobs again: {exc}")
        if done.state == "failed":
            self.failed("fire", RuntimeError(done.error or "not submitted"))
            await self.refresh_failed()
            return RunResult("skipped", detail=done.error or "")
        self.fired(done)
        self.recovered()
        return RunResult("submitted", job_id=done.job_id)

    async def _overlap_state(self) -> tuple[str, str | None]:
        if self.cfg.overlap == "allow":
            return "claimed", None
        busy = await self._busy()
        if self.cfg.overlap == "skip":
            return ("skipped", "the previous run still runs (overlap = skip)") if busy \
                else ("claimed", None)
        waiting = await self.ctx.store.count(self.name, "waiting")
        if waiting >= MAX_WAITING:
            return "skipped", f"{waiting} runs are already queued (overlap = queue)"
        if busy or waiting:
            return "waiting", "the previous run still runs (overlap = queue)"
        return "claimed", None

    async def _busy(self) -> bool:
        """Whether a job this trigger fired is still queued or running."""
        for fire in await self.ctx.store.fires(trigger=self.name, states=("submitted",)):
            job = await self.ctx.runner.get(fire.job_id or "")
            if job is not None and not job.terminal:
                return True
        return False

    async def release_waiting(self) -> None:
        """With ``overlap = "queue"``: submit the oldest waiting fire once nothing runs."""
        if self.cfg.overlap != "queue" or await self._busy():
            return
        waiting = await self.ctx.store.fires(trigger=self.name, states=("waiting",), limit=1)
        if waiting:
            await self._submit(waiting[0])

    async def job_ended(self, fire: Fire) -> None:
        await super().job_ended(fire)
        self.wake()  # a queued fire may go now (the loop calls release_waiting)
