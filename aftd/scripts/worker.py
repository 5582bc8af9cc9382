"""A worker process running one job of a script declared ``ISOLATION = "process"``.

A SyncJS script (``<id>.js``) runs here too, on an embedded JavaScript engine
(:mod:`aftd.scripts.syncjs.engine`) with the same job context.

The daemon starts :func:`run` in a fresh process (see :mod:`aftd.scripts.isolation`) with the
job's description as JSON and three sockets: the control channel, and the ends that become this
process's stdout and stderr (so ``print``, warnings, C-level output and faulthandler's dump of a
crash all land in the job's log). The script gets the same job API as in the daemon: params,
``job.log``, ``job.http``, ``job.vfs`` (built here from the VFS config), and — answered by the
daemon over the channel — ``job.secret`` and the report outbox. A SIGTERM cancels the script so
its ``finally`` blocks run; the daemon follows up with SIGKILL after a grace period.

Importing this module loads what a job needs, so a forkserver that preloads it forks workers
that start in milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import json
import multiprocessing
import os
import signal
import socket
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import structlog

from aftd import progress
from aftd.configmodel import Section
from aftd.scripts.context import JobContext, Services
from aftd.scripts.execute import run_script
from aftd.scripts.loader import ScriptError, ScriptInfo, ScriptLoader
from aftd.scripts.worker_api import (
    Channel,
    ProgressForwarder,
    RemoteOutbox,
    RemoteSecrets,
    configure_logging,
)
from aftd.vfs.config import VfsConfig, parse_vfs_section
from aftd.vfs.registry import VfsPool

__all__ = ["PRELOAD", "WireOutcome", "run"]

# Imported once by the forkserver for all workers: the worker, the VFS backends (otherwise loaded
# on first use), the claim helpers, and the daemon's entry module (multiprocessing runs the main
# module again in each worker; cheap once its imports are loaded).
PRELOAD = ["aftd.scripts.worker", "aftd.vfs.local", "aftd.vfs.sftp", "aftd.report.workflow",
           "aftd.scripts.syncjs.engine", "aftd.cli.aftd_main"]

WireOutcome = dict[str, Any]


def run(spec_json: str, ctrl: socket.socket, out: socket.socket, err: socket.socket) -> None:
    """The worker process's entry point; it ends the process itself (see :func:`_finish`)."""
    _redirect_output(out, err)
    _detach_from_daemon()
    channel = Channel(ctrl)
    channel.start()
    try:
        outcome = asyncio.run(_job(json.loads(spec_json), channel))
    except BaseException as exc:  # the worker itself broke, not the script
        outcome = {"outcome": "exception", "error": f"worker: {type(exc).__name__}: {exc}"}
    _finish(channel, outcome)


def _redirect_output(out: socket.socket, err: socket.socket) -> None:
    os.dup2(out.fileno(), 1)
    os.dup2(err.fileno(), 2)
    out.close()
    err.close()
    # Line-buffered so each line reaches the job log as it is printed.
    sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="backslashreplace",  # noqa: SIM115
                      closefd=False)
    sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="backslashreplace",  # noqa: SIM115
                      closefd=False)
    faulthandler.enable(file=sys.stderr, all_threads=True)
    warnings.showwarning = _showwarning


def _showwarning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: TextIO | None = None, line: str | None = None) -> None:
    """A warning is a line of the job's log, as for a script running in the daemon."""
    structlog.get_logger("aftd.script").warning(
        f"{category.__name__}: {message}", stream="warnings", category=category.__name__,
        filename=filename, lineno=lineno)


def _detach_from_daemon() -> None:
    # Ctrl-C on the daemon's terminal reaches the whole process group: the daemon decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The daemon talks to systemd, never its workers.
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        os.environ.pop(name, None)
    # Started as a daemonic multiprocessing child (so the daemon's exit never waits for it);
    # that flag would forbid a script's own multiprocessing pools.
    multiprocessing.current_process().daemon = False


def _finish(channel: Channel, outcome: WireOutcome) -> None:
    try:
        channel.send({"t": "done", **outcome})
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        # Not sys.exit: threads a script left running must not keep the worker alive.
        os._exit(0)


async def _job(spec: Mapping[str, Any], channel: Channel) -> WireOutcome:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    configure_logging(str(spec.get("log_level", "info")), channel)
    secrets = RemoteSecrets(channel)
    pool = VfsPool(_vfs_configs(spec.get("vfs", [])), secrets)
    services = Services(secrets=secrets, vfs=pool,
                        outbox=RemoteOutbox(channel) if spec.get("outbox") else None,
                        http_ca_file=Path(spec["http_ca_file"]) if spec.get("http_ca_file")
                        else None, http_timeout_s=float(spec.get("http_timeout_s", 30.0)))
    jlog = structlog.get_logger("aftd.job")
    ctx = JobContext(spec["job_id"], spec["script_id"], spec.get("params", {}), jlog, services)
    sink = ProgressForwarder(channel)
    progress.CURRENT.set(sink)
    progress.add_transfer_observer(sink.transfer_finished)
    try:
        return await _run_main(spec, ctx, jlog)
    finally:
        await _close(ctx, pool)
        sink.flush()


async def _close(ctx: JobContext, pool: VfsPool) -> None:
    try:
        await asyncio.wait_for(asyncio.gather(ctx.aclose(), pool.aclose()), timeout=10)
    except (Exception, asyncio.CancelledError) as exc:
        structlog.get_logger("aftd.job").warning("worker_cleanup_failed",
                                                 error=f"{type(exc).__name__}: {exc}")


async def _run_main(spec: Mapping[str, Any], ctx: JobContext, jlog: Any) -> WireOutcome:
    """Load and run the script as the runner does inline (same outcome for the same ending)."""
    path = Path(spec["path"])
    if spec.get("language") == "syncjs":
        return await _run_syncjs(spec, path, ctx, jlog)
    info = ScriptInfo(id=spec["script_id"], name=spec["script_id"], description="", path=path)
    try:
        main = ScriptLoader(path.parent).load_main(info)
    except ScriptError as exc:
        jlog.error("script_load_failed", error=str(exc))
        return {"outcome": "finished", "status": "failed", "exit_code": None, "error": str(exc)}
    try:
        result = await run_script(main, ctx, jlog)
    except asyncio.CancelledError:
        return {"outcome": "cancelled"}
    return {"outcome": "finished", "status": result.status, "exit_code": result.exit_code,
            "error": result.error}


async def _run_syncjs(spec: Mapping[str, Any], path: Path, ctx: JobContext,
                      jlog: Any) -> WireOutcome:
    from aftd.scripts.syncjs.engine import run_syncjs  # preloaded by the forkserver

    try:
        result = await run_syncjs(path, ctx, jlog, memory_mb=int(spec["js_memory_mb"]))
    except asyncio.CancelledError:
        return {"outcome": "cancelled"}
    return {"outcome": "finished", "status": result.status, "exit_code": result.exit_code,
            "error": result.error}


def _vfs_configs(tables: Any) -> dict[str, VfsConfig]:
    return parse_vfs_section(Section(tables, "<worker spec>", "vfs"))
