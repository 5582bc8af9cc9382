"""Running a job's script in a worker process: the daemon's side.

A script declares ``ISOLATION = "process"`` (``[scripts] isolation`` sets the default) when it
cannot be trusted to stay asynchronous: a blocking call or a crash then stalls or kills only its
own worker. Each job gets a fresh process, used once: nothing a script leaves behind (threads,
monkey-patches, a corrupted interpreter) can reach the next job.

Processes come from multiprocessing's ``forkserver``: a clean server process, started once,
that has imported the worker's modules and forks a worker per job in milliseconds (a fresh
interpreter per job costs ~0.3 s of CPU; ``bench/isolation_bench.py`` measures both). Where
forkserver does not exist, ``spawn`` is used. Only the job's description goes to the worker
pickled (from the daemon, which is trusted); everything coming back is framed JSON
(:mod:`aftd.scripts.ipc`), checked here before it is believed.

All multiprocessing calls run on one dedicated thread: starting a worker blocks for the fork,
and ``Process`` objects are not safe to poll from two threads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import multiprocessing
import multiprocessing.context
import os
import socket
from collections.abc import Callable
from typing import Any, TypeVar

import structlog

from aftd.config import ISOLATION_MODES, ScriptsConfig
from aftd.errors import ConfigError
from aftd.scripts.context import JobRecord, Services
from aftd.scripts.execute import Outcome
from aftd.scripts.loader import ScriptError, ScriptInfo
from aftd.scripts.supervise import Supervisor
from aftd.vfs.config import vfs_tables
from aftd.vfs.registry import VfsPool

__all__ = ["WorkerPool", "isolation_of", "wants_process"]

log = structlog.get_logger("aftd.isolation")

_T = TypeVar("_T")


def isolation_of(info: ScriptInfo, default: str) -> str:
    """``inline`` or ``process`` for this script; a bad ``ISOLATION`` fails its job."""
    value = info.isolation
    if value is None:
        return default
    if isinstance(value, str) and value in ISOLATION_MODES:
        return value
    raise ScriptError(f'script {info.id!r}: ISOLATION must be "inline" or "process", '
                      f"got {value!r}")


class WorkerPool:
    """Starts worker processes, at most ``[scripts] max_workers`` alive at once."""

    def __init__(self, cfg: ScriptsConfig, log_level: str = "info") -> None:
        self._mp = _mp_context()
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="aftd-mp")
        self._warm: asyncio.Task[None] | None = None
        self.configure(cfg, log_level)

    def configure(self, cfg: ScriptsConfig, log_level: str) -> None:
        """Apply a (re)loaded config to jobs started from now on."""
        self.cfg, self.log_level = cfg, log_level
        self._slots = asyncio.Semaphore(cfg.max_workers)

    @property
    def start_method(self) -> str:
        return self._mp.get_start_method()

    def warm_up(self) -> None:
        """Start the forkserver in the background so the first isolated job does not wait."""
        self._warm = asyncio.create_task(self._warm_up(), name="aftd-worker-warmup")

    async def _warm_up(self) -> None:
        try:
            await self.call(_start_and_join, self._mp)
            log.info("worker_pool_ready", start_method=self.start_method)
        except Exception as exc:  # isolated jobs will fail with the reason; inline ones run
            log.error("worker_pool_failed", error=f"{type(exc).__name__}: {exc}")

    def mode_for(self, info: ScriptInfo) -> str:
        return isolation_of(info, self.cfg.isolation)

    async def call(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run a multiprocessing call on the pool's own thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, fn, *args)

    async def run(self, job: JobRecord, info: ScriptInfo, jlog: Any, services: Services) -> Outcome:
        """Run ``job`` in a worker process; how it ended (CancelledError if cancelled)."""
        try:
            spec = _spec(job, info, services, self.log_level, self.cfg.js_memory_mb)
        except ScriptError as exc:
            jlog.error("script_load_failed", error=str(exc))
            return Outcome("failed", None, str(exc))
        if self._warm is not None:
            await asyncio.shield(self._warm)
        slots, grace = self._slots, self.cfg.kill_grace_s
        async with slots:
            sup = Supervisor(self.call, job, jlog, services, grace)
            return await sup.run(lambda: self.call(_start, self._mp, spec, sup.child_ends()))

    async def aclose(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)


def _mp_context() -> multiprocessing.context.BaseContext:
    """forkserver where the platform has it; ``AFTD_WORKER_START_METHOD`` overrides it (the
    benchmark compares the two)."""
    from aftd.scripts.worker import PRELOAD

    methods = multiprocessing.get_all_start_methods()
    method = os.environ.get("AFTD_WORKER_START_METHOD") or \
        ("forkserver" if "forkserver" in methods else "spawn")
    if method not in methods:
        raise ConfigError("environment", "AFTD_WORKER_START_METHOD",
                          f"must be one of {', '.join(methods)}; got {method!r}")
    ctx = multiprocessing.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(PRELOAD)
    return ctx


def _noop() -> None:
    pass


def _start_and_join(mp: multiprocessing.context.BaseContext) -> None:
    proc = mp.Process(target=_noop, name="aftd-worker-warmup", daemon=True)  # type: ignore[attr-defined]
    proc.start()
    proc.join(30)
    if proc.exitcode != 0:
        raise RuntimeError(f"a test worker process ended with exit code {proc.exitcode}")


def _start(mp: multiprocessing.context.BaseContext, spec: str,
           ends: tuple[socket.socket, socket.socket, socket.socket]) -> Any:
    from aftd.scripts.worker import run

    proc = mp.Process(target=run, args=(spec, *ends), daemon=True,  # type: ignore[attr-defined]
                      name="aftd-worker")
    proc.start()
    return proc


def _spec(job: JobRecord, info: ScriptInfo, services: Services, log_level: str,
          js_memory_mb: int) -> str:
    """The job's description for the worker: names and settings, never a secret value."""
    if not isinstance(services.vfs, VfsPool):
        raise ScriptError("process isolation needs the daemon's VFS pool")
    spec = {
        "job_id": job.id, "script_id": job.script_id, "path": str(info.path),
        "language": info.language, "js_memory_mb": js_memory_mb,
        "params": job.params,
        "vfs": vfs_tables(services.vfs.configs),
        "outbox": services.outbox is not None,
        "http_ca_file": str(services.http_ca_file) if services.http_ca_file else None,
        "http_timeout_s": services.http_timeout_s, "log_level": log_level,
    }
    try:
        return json.dumps(spec, allow_nan=False)
    except ValueError as exc:
        raise ScriptError(f"the job's params cannot be passed to a worker process: {exc}") \
            from None


def wants_process(info: ScriptInfo, workers: WorkerPool | None) -> bool:
    """Whether ``info``'s jobs run in a worker process (``workers`` is None in a daemon that
    runs none); a bad ``ISOLATION`` fails the job. SyncJS scripts always do: only a process
    can stop a JavaScript loop that never calls back into Python."""
    if info.language == "syncjs":
        if workers is None:
            raise ScriptError(f"script {info.id!r} is a SyncJS script, which runs in a worker "
                              "process, and this daemon runs none")
        return True
    if workers is None:
        if isolation_of(info, "inline") == "process":
            raise ScriptError(f"script {info.id!r} asks for ISOLATION = \"process\" but this "
                              "daemon runs no worker processes")
        return False
    return workers.mode_for(info) == "process"
