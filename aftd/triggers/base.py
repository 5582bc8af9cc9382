"""What every trigger runtime shares: its context, its status, its life as a task, backoff."""

from __future__ import annotations

import abc
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import structlog

from aftd.tasks import cancel_and_wait
from aftd.triggers.config import TriggerConfig
from aftd.triggers.firing import Firing
from aftd.triggers.ports import JobPort
from aftd.triggers.store import STORE_ERRORS, Fire, TriggerStore
from aftd.vfs.base import Vfs

__all__ = ["Backoff", "ErrorSink", "RunResult", "TriggerContext", "TriggerMetrics",
           "TriggerRuntime", "TriggerStatus"]

log = structlog.get_logger("aftd.triggers")

TriggerState = Literal["active", "paused", "error"]
ErrorSink = Callable[[str, str, str], Awaitable[None]]
# A trigger's failed files shown in its status, newest first.
FAILED_SHOWN = 100
_STORE_RETRY_FIRST_S = 0.5
_STORE_RETRY_MAX_S = 30.0


class TriggerMetrics(Protocol):
    """What triggers report (aftd.metrics.Metrics implements it)."""

    def count_trigger_fire(self, trigger: str) -> None: ...

    def count_trigger_error(self, trigger: str) -> None: ...

    def observe_watch_poll(self, trigger: str, seconds: float) -> None: ...


@dataclass
class TriggerContext:
    """The daemon's parts a trigger uses; ``vfs`` reads the current pool (a reload swaps it)."""

    store: TriggerStore
    runner: JobPort
    vfs: Callable[[str], Vfs]
    firing: Firing
    metrics: TriggerMetrics | None = None
    # Told (trigger, script, error) when a trigger starts failing or fails differently: the
    # daemon's trigger.error notification (README, "Notifications").
    on_error: ErrorSink | None = None
    _announcing: set[asyncio.Task[None]] = field(default_factory=set)

    def count_error(self, trigger: str) -> None:
        if self.metrics is not None:
            self.metrics.count_trigger_error(trigger)

    def announce_error(self, trigger: str, script: str, error: str) -> None:
        """Hand a new error to ``on_error`` without holding up the trigger's loop."""
        if self.on_error is None:
            return
        task = asyncio.get_running_loop().create_task(
            self._announce(trigger, script, error), name=f"aftd-trigger-error-{trigger}")
        self._announcing.add(task)
        task.add_done_callback(self._announcing.discard)

    async def _announce(self, trigger: str, script: str, error: str) -> None:
        assert self.on_error is not None
        try:
            await self.on_error(trigger, script, error)
        except Exception:  # a notification that cannot be queued must not stop the trigger
            log.exception("trigger_error_not_announced", trigger=trigger)


@dataclass
class TriggerStatus:
    name: str
    type: str
    state: TriggerState
    script: str
    last_fired_at: float | None
    next_fire_at: float | None
    last_error: str | None
    pending_files: int
    failed_files: list[Fire] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunResult:
    """What ``POST /v1/triggers/{name}/run`` did."""

    outcome: Literal["submitted", "queued", "skipped", "scanning"]
    job_id: str | None = None
    detail: str = ""


class Backoff:
    """Exponential delays for retrying a failing poll: first, 2x, 4x ... up to ``most``."""

    def __init__(self, first: float, most: float) -> None:
        self.first, self.most = first, most
        self.current = first

    def next(self) -> float:
        delay, self.current = self.current, min(self.current * 2, self.most)
        return delay

    def reset(self) -> None:
        self.current = self.first


class TriggerRuntime(abc.ABC):
    """One configured trigger as a task: loads its durable record, then runs its loop."""

    def __init__(self, cfg: TriggerConfig, ctx: TriggerContext) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.name = cfg.name
        self.paused = False
        self.since = time.time()
        self.last_fired_at: float | None = None
        self.last_error: str | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failed: list[Fire] = []
        self._failed_count = 0

    @property
    def definition(self) -> str:
        """The config as canonical JSON: a change starts the trigger afresh (its fires stay)."""
        return json.dumps(self.cfg.model_dump(mode="json"), sort_keys=True)

    def start(self) -> None:
        self._task = asyncio.create_task(self._main(), name=f"aftd-trigger-{self.name}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _main(self) -> None:
        record = await retry_store(self.name, "load", lambda: self.ctx.store.sync_trigger(
            self.name, self.definition, time.time()))
        self.paused, self.since = record.paused, record.since
        last = await retry_store(self.name, "load", lambda: self.ctx.store.last_fire(self.name))
        if last is not None:
            self.last_fired_at = last.claimed_at
        await self.refresh_failed()
        log.info("trigger_started", trigger=self.name, type=self.cfg.type, paused=self.paused,
                 **self.describe())
        try:
            await self.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must show in the status, not end the daemon
            log.exception("trigger_crashed", trigger=self.name)
            self.last_error = f"internal error: {type(exc).__name__}: {exc}"
            self.ctx.announce_error(self.name, self.cfg.script, self.last_error)

    @abc.abstractmethod
    async def run(self) -> None:
        """The trigger's loop (runs until cancelled)."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """The type's own settings and runtime facts, for the status and the start log line."""

    @abc.abstractmethod
    async def run_now(self) -> RunResult: ...

    def next_fire_at(self) -> float | None:
        return None

    def pending_files(self) -> int:
        return 0

    # -- operations ----------------------------------------------------------------------------
    async def set_paused(self, paused: bool) -> None:
        await self.ctx.store.set_paused(self.name, paused, time.time())
        self.paused = paused
        if not paused:
            self.since = time.time()
        log.info("trigger_paused" if paused else "trigger_resumed", trigger=self.name)
        self.wake()

    def wake(self) -> None:
        self._wake.set()

    async def wait_wake(self, delay: float | None) -> bool:
        """Sleep until woken or ``delay`` seconds pass (None: no limit); True when woken."""
        try:
            async with asyncio.timeout(delay):
                await self._wake.wait()
        except TimeoutError:
            return False
        self._wake.clear()
        return True

    async def job_ended(self, fire: Fire) -> None:
        """A job this trigger fired has ended (its row already records how)."""
        if fire.state == "failed":
            await self.refresh_failed()

    async def refresh_failed(self) -> None:
        store = self.ctx.store
        self._failed_count = await store.count(self.name, "failed")
        self._failed = await store.fires(trigger=self.name, states=("failed",),
                                         limit=FAILED_SHOWN, newest=True)

    def status(self) -> TriggerStatus:
        state: TriggerState = "paused" if self.paused else (
            "error" if self.last_error is not None else "active")
        return TriggerStatus(
            name=self.name, type=self.cfg.type, state=state, script=self.cfg.script,
            last_fired_at=self.last_fired_at, next_fire_at=None if self.paused
            else self.next_fire_at(), last_error=self.last_error,
            pending_files=self.pending_files(), failed_files=list(self._failed),
            details={**self.describe(), "failedCount": self._failed_count})

    def fired(self, fire: Fire) -> None:
        self.last_fired_at = time.time()
        if self.ctx.metrics is not None:
            self.ctx.metrics.count_trigger_fire(self.name)

    def failed(self, what: str, exc: BaseException) -> None:
        """A poll, fire or step failed: shown as ``error`` until the next success."""
        message = f"{what}: {exc}" if str(exc) else f"{what}: {type(exc).__name__}"
        if message != self.last_error:
            log.error("trigger_failed", trigger=self.name, step=what, error=str(exc) or
                      type(exc).__name__)
            self.ctx.announce_error(self.name, self.cfg.script, message)
        self.last_error = message
        self.ctx.count_error(self.name)

    def recovered(self) -> None:
        if self.last_error is not None:
            log.info("trigger_recovered", trigger=self.name)
            self.last_error = None


async def retry_store(trigger: str, step: str, fn: Callable[[], Any]) -> Any:
    """``fn()`` until the store stops failing (a locked or full database)."""
    delay = _STORE_RETRY_FIRST_S
    while True:
        try:
            return await fn()
        except STORE_ERRORS as exc:
            log.warning("trigger_store_retry", trigger=trigger, step=step, error=str(exc),
                        retry_in_s=delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, _STORE_RETRY_MAX_S)
