"""Running one SyncJS script in the worker process: QuickJS on a thread of its own.

The engine is QuickJS (PyPI ``quickjs-ng``, an abi3 wheel): embedded, a fresh runtime per job,
with a memory limit (``[scripts] js_memory_mb``). Its host functions are synchronous Python
callables, which is what SyncJS needs (V8 bindings such as mini-racer turn host calls into
Promises). QuickJS cannot combine its own time limit with Python callables, so a script that
loops without calling the host cannot be interrupted from inside: the job's timeout and cancel
end the worker process instead (SIGTERM, then SIGKILL; see :mod:`aftd.scripts.supervise`). That
is why SyncJS jobs always run in a worker process.

The event loop stays on the worker's main thread (signals, the daemon channel, the VFS and HTTP
clients); the script runs on the ``aftd-syncjs`` thread and waits for each host call
(:mod:`.bridge`). QuickJS releases the GIL while JavaScript runs, so a busy script does not
starve the loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import quickjs

from aftd.scripts.context import JobContext
from aftd.scripts.execute import Outcome, outcome_of_exit
from aftd.scripts.syncjs.bridge import LoopBridge
from aftd.scripts.syncjs.errors import parse_js_error
from aftd.scripts.syncjs.host import Ending, Host

__all__ = ["PRELUDE", "run_syncjs"]

PRELUDE = resources.files("aftd.scripts.syncjs").joinpath("prelude.js").read_text("utf-8")
# The engine's thread gets the C stack QuickJS's own limit assumes (glibc's default is the
# same; musl's is far smaller).
_THREAD_STACK = 8 << 20
_JS_STACK = 1 << 20
# After a cancel, host calls in flight (a copy) get this long to clean up.
_CANCEL_CLEANUP_S = 5.0


async def run_syncjs(path: Path, ctx: JobContext, jlog: Any, *, memory_mb: int) -> Outcome:
    """Run the script at ``path`` for job ``ctx``; raises CancelledError when cancelled."""
    source = await asyncio.to_thread(_read_source, path)
    if isinstance(source, Outcome):
        jlog.error("script_load_failed", error=source.error)
        return source
    loop = asyncio.get_running_loop()
    ending: asyncio.Future[Ending] = loop.create_future()

    def end(result: Ending) -> None:
        loop.call_soon_threadsafe(_settle, ending, result)

    bridge = LoopBridge(loop, contextvars.copy_context())
    host = Host(ctx, jlog, bridge, end, path.name)
    _start_thread(source, host, memory_mb << 20, end)
    try:
        result = await ending
    except asyncio.CancelledError:
        await bridge.cancel_all(_CANCEL_CLEANUP_S)
        raise
    return _outcome(result, ctx.script_id, path.name, memory_mb, jlog)


def _read_source(path: Path) -> str | Outcome:
    try:
        return path.read_bytes().decode("utf-8").removeprefix("\ufeff")
    except OSError as exc:
        return Outcome("failed", None, f"cannot read {path.name}: {exc.strerror or exc}")
    except UnicodeDecodeError as exc:
        return Outcome("failed", None, f"{path.name} is not UTF-8 text (byte {exc.start})")


def _settle(future: asyncio.Future[Ending], result: Ending) -> None:
    if not future.done():
        future.set_result(result)


def _start_thread(source: str, host: Host, memory: int, end: Callable[[Ending], None]) -> None:
    old = threading.stack_size(_THREAD_STACK)
    try:
        threading.Thread(target=_engine, args=(source, host, memory, end), daemon=True,
                         name="aftd-syncjs").start()
    finally:
        threading.stack_size(old)


def _engine(source: str, host: Host, memory: int, end: Callable[[Ending], None]) -> None:
    """The engine thread: a fresh runtime, the host API, then the script."""
    try:
        js = quickjs.Context()
        js.set_memory_limit(memory)
        js.set_max_stack_size(_JS_STACK)
        js.add_callable("__aftd_host", host)
        js.eval(PRELUDE)
        js.eval(source)
    except (quickjs.JSException, quickjs.StackOverflow) as exc:
        end(Ending("error", text=str(exc)))
    except BaseException as exc:  # the engine itself failed, not the script
        end(Ending("crash", text=f"{type(exc).__name__}: {exc}"))
    else:
        end(Ending("finished"))


def _outcome(result: Ending, script_id: str, script: str, memory_mb: int,
             jlog: Any) -> Outcome:
    if result.kind == "finished":
        return outcome_of_exit(0)
    if result.kind == "exit":
        return outcome_of_exit(result.code if result.code is not None else 0)
    if result.kind in ("unsupported", "crash"):
        error = result.text if result.kind == "unsupported" else \
            f"the JavaScript engine failed: {result.text}"
        return Outcome("failed", None, error)
    err = parse_js_error(result.text, script)
    message = err.describe(script)
    if "out of memory" in err.message:
        message += f"; the script may use {memory_mb} MiB ([scripts] js_memory_mb)"
    if err.syntax:
        message = f"script {script_id!r} failed to load: {message}"
        jlog.error("script_load_failed", error=message)
    else:
        jlog.error("job_exception", error=message, traceback=err.stack)
    return Outcome("failed", None, message)
