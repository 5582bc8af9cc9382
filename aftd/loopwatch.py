"""The loop-lag monitor: names the job whose code blocks the event loop.

The loop updates a heartbeat every :data:`TICK_S` through ``loop.call_later``; a watcher
*thread* (a coroutine could not run while the loop is stuck) notices when the heartbeat is late
by more than the threshold. It then logs one ``event_loop_blocked`` line with the time blocked
so far, the job and script whose code is running, and the loop thread's stack (scrubbed of
secrets); when the heartbeat moves again, one ``event_loop_unblocked`` line with the total.

Which job is running is read from the current task's context: a task factory keeps each task's
``contextvars.Context``, and the runner binds the job there with :func:`bind_job` (tasks a
script creates inherit it). The same factory contains ``SystemExit``/``KeyboardInterrupt`` raised
in a task a script started: asyncio re-raises those two out of the event loop, which would end
the daemon; inside a job's task tree they become an ordinary error of that task instead (the
job's own ``main`` is handled by the runner). When the context cannot tell (the loop is blocked
outside any task, or in a task created with a fresh context), the stack is searched for a file
in the scripts directory, which at least names the script.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import structlog

from aftd.redact import scrub

__all__ = ["TICK_S", "Blocker", "LoopWatch", "ScriptTaskExit", "bind_job"]

log = structlog.get_logger("aftd.loopwatch")

TICK_S = 0.1
# Deep enough for a script's call chain under the runner; the outermost frames are the loop's.
_STACK_LIMIT = 40
# (job id, script id) of the job whose task this is.
_JOB: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar("aftd_job",
                                                                              default=None)

# Told the script of a stall when it passes the threshold (None: no script known) ...
OnBlocked = Callable[[str | None], None]
# ... and the stall's total length when it ends.
OnUnblocked = Callable[[float], None]


def bind_job(job_id: str, script_id: str) -> None:
    """Mark the current task (and the tasks it creates) as running ``job_id``."""
    _JOB.set((job_id, script_id))


@dataclass(frozen=True)
class Blocker:
    """What the loop thread was doing when the stall was noticed."""

    job_id: str | None
    script_id: str | None
    stack: str


class LoopWatch:
    """Start it from the loop's thread with :meth:`start`; :meth:`stop` before the loop closes.

    ``on_blocked`` and ``on_unblocked`` (metrics) hear of each stall when it is noticed and
    when it ends; they are called from the watcher thread.
    """

    def __init__(self, threshold_s: float, *, scripts_dir: Path | None = None,
                 on_blocked: OnBlocked | None = None,
                 on_unblocked: OnUnblocked | None = None) -> None:
        self.threshold_s = threshold_s
        self.scripts_dir = scripts_dir
        self._on_blocked, self._on_unblocked = on_blocked, on_unblocked
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._beat = time.monotonic()
        self._handle: asyncio.TimerHandle | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._contexts: weakref.WeakKeyDictionary[asyncio.Task[Any], contextvars.Context] = \
            weakref.WeakKeyDictionary()
        self._factory_installed = False

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop, self._loop_thread = loop, threading.get_ident()
        self._install_factory(loop)
        self._tick()
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name="aftd-loopwatch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._handle is not None:
            self._handle.cancel()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._factory_installed and self._loop is not None:
            self._loop.set_task_factory(None)
            self._factory_installed = False

    def _install_factory(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop.get_task_factory() is not None:
            # Someone else owns task creation; fall back to finding the script on the stack.
            log.warning("loopwatch_task_factory_in_use")
            return
        loop.set_task_factory(self._new_task)  # type: ignore[arg-type]
        self._factory_installed = True

    def _new_task(self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any],
                  **kw: Any) -> asyncio.Task[Any]:
        # The same context a Task would copy for itself, kept so another thread can read it.
        ctx = kw.pop("context", None) or contextvars.copy_context()
        if ctx.get(_JOB) is not None:
            coro = _contained(coro)
        task: asyncio.Task[Any] = asyncio.Task(coro, loop=loop, context=ctx, **kw)
        self._contexts[task] = ctx
        return task

    def _tick(self) -> None:
        self._beat = time.monotonic()
        assert self._loop is not None
        self._handle = self._loop.call_later(TICK_S, self._tick)

    # -- the watcher thread -----------------------------------------------------------------
    def _watch(self) -> None:
        while not self._stop.wait(TICK_S / 2):
            if self.threshold_s <= 0:
                continue
            beat = self._beat
            lag = time.monotonic() - beat - TICK_S
            if lag >= self.threshold_s:
                self._stall(beat, lag)

    def _stall(self, beat: float, lag: float) -> None:
        blocker = self.blocker()
        log.warning("event_loop_blocked", blocked_s=round(lag, 3),
                    threshold_s=self.threshold_s, job_id=blocker.job_id,
                    script_id=blocker.script_id, stack=blocker.stack)
        _notify(self._on_blocked, blocker.script_id)
        while self._beat == beat and not self._stop.wait(TICK_S / 4):
            pass
        # The first tick after the stall runs as soon as the loop is back: it marks the end.
        resumed = self._beat if self._beat != beat else time.monotonic()
        total = max(resumed - beat - TICK_S, lag)
        log.warning("event_loop_unblocked", blocked_s=round(total, 3), job_id=blocker.job_id,
                    script_id=blocker.script_id)
        _notify(self._on_unblocked, total)

    # -- who is blocking ----------------------------------------------------------------------
    def blocker(self) -> Blocker:
        """The job, script and stack of what the loop thread runs right now."""
        frame = sys._current_frames().get(self._loop_thread)
        stack = scrub("".join(traceback.format_stack(frame, limit=_STACK_LIMIT))) if frame \
            else ""
        job_id, script_id = self._job_of_current_task()
        if script_id is None and frame is not None:
            script_id = self._script_on_stack(frame)
        return Blocker(job_id, script_id, stack)

    def _job_of_current_task(self) -> tuple[str | None, str | None]:
        if self._loop is None:
            return None, None
        task = asyncio.current_task(self._loop)
        ctx = self._contexts.get(task) if task is not None else None
        if ctx is None:
            return None, None
        job = ctx.get(_JOB)
        return job if job is not None else (None, None)

    def _script_on_stack(self, frame: FrameType) -> str | None:
        if self.scripts_dir is None:
            return None
        for filename in _filenames(frame):
            path = Path(filename)
            if path.suffix == ".py" and path.parent == self.scripts_dir:
                return path.stem
        return None


class ScriptTaskExit(RuntimeError):
    """``sys.exit()`` or ``KeyboardInterrupt`` in a task a script started (not its ``main``)."""


async def _contained(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        return await coro
    except (SystemExit, KeyboardInterrupt) as exc:
        what = f"SystemExit({exc.code!r})" if isinstance(exc, SystemExit) else type(exc).__name__
        raise ScriptTaskExit(f"{what} raised in a task the script started; only that task "
                             "ended (call job.exit(code) from main to end the job)") from None


def _filenames(frame: FrameType | None) -> Iterator[str]:
    """Innermost first: the frame nearest the blocking call names the culprit."""
    while frame is not None:
        yield frame.f_code.co_filename
        frame = frame.f_back


def _notify(callback: Callable[[Any], None] | None, arg: Any) -> None:
    if callback is None:
        return
    try:
        callback(arg)
    except Exception:  # metrics must not kill the watcher
        log.exception("loopwatch_observer_failed")
