"""How long each step of the daemon's shutdown may take, running a step bounded, and closing
the event loop bounded (README, "Stopping"); the unit's TimeoutStopSec covers the sum."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable

import structlog

from aftd.jobs.recorder import STORE_FLUSH_S
from aftd.jobs.runner import CANCEL_WAIT_S

__all__ = ["BACKENDS_CLOSE_S", "OUTBOX_FLUSH_S", "SHUTDOWN_OVERHEAD_S", "TRIGGERS_STOP_S",
           "WEB_SHUTDOWN_S", "bounded", "close_loop"]

log = structlog.get_logger("aftd.daemon")

# Shutdown steps after the jobs' grace period, each bounded (README, "Stopping").
OUTBOX_FLUSH_S = 5.0
WEB_SHUTDOWN_S = 5.0
TRIGGERS_STOP_S = 5.0
BACKENDS_CLOSE_S = 5.0
LOOP_CLOSE_S = 2.0
# Closing the loop: leftover tasks, the default executor, then other threads, each bounded.
SHUTDOWN_OVERHEAD_S = (TRIGGERS_STOP_S + CANCEL_WAIT_S + STORE_FLUSH_S + OUTBOX_FLUSH_S
                       + WEB_SHUTDOWN_S + BACKENDS_CLOSE_S + 3 * LOOP_CLOSE_S)


async def bounded(what: str, aw: Awaitable[None], timeout_s: float) -> None:
    try:
        await asyncio.wait_for(aw, timeout_s)
    except TimeoutError:
        log.error("shutdown_step_timed_out", step=what, timeout_s=timeout_s)
    except Exception as exc:
        log.error("shutdown_step_failed", step=what, error=f"{type(exc).__name__}: {exc}")


def close_loop(loop: asyncio.AbstractEventLoop) -> bool:
    """Like the end of ``asyncio.run`` but bounded; False when something would not stop."""
    clean = True
    try:
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        if tasks:
            _, pending = loop.run_until_complete(asyncio.wait(tasks, timeout=LOOP_CLOSE_S))
            clean = not pending
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(asyncio.wait_for(loop.shutdown_default_executor(),
                                                 LOOP_CLOSE_S))
    except (TimeoutError, RuntimeError):
        clean = False
    if clean:
        loop.close()
    return clean and not _stuck_threads()


def _stuck_threads() -> bool:
    deadline = time.monotonic() + LOOP_CLOSE_S
    for thread in threading.enumerate():
        if thread is threading.main_thread() or thread.daemon:
            continue
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            return True
    return False
