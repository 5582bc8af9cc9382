"""Named, bounded thread pools for the daemon's blocking work.

asyncio's default executor is one pool for everything, so two big local tree copies could
occupy every thread and make a Vault lookup or a script load wait behind them. Each kind of
blocking work gets a pool of its own instead:

* ``file_io`` — local filesystem calls and kernel copies (:mod:`aftd.vfs.local`);
* ``secrets`` — secret providers that block (hvac's HTTP calls, reading the secrets file);
* ``scripts`` — importing a script's module before a job runs.

Sizes come from the ``[executors]`` config section (see README, "Configuration"); pools are
created on first use and re-created after :func:`shutdown`, so library use without a daemon
(tests, tools) needs no set-up. Work carries the caller's context variables (job id for the
log), as :func:`asyncio.to_thread` does.
"""

from __future__ import annotations

import asyncio
import contextvars
import ctypes
import ctypes.util
import functools
import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from pydantic import Field

from aftd.configmodel import ConfigModel, Section

__all__ = [
    "DEFAULT_SIZES",
    "FILE_IO",
    "NAMES",
    "SCRIPTS",
    "SECRETS",
    "BoundedExecutor",
    "ExecutorsConfig",
    "configure",
    "get",
    "parse_executors_section",
    "run",
    "shutdown",
]

T = TypeVar("T")

FILE_IO = "file_io"
SECRETS = "secrets"
SCRIPTS = "scripts"
NAMES = (FILE_IO, SECRETS, SCRIPTS)
# For a 2-core host: four file I/O threads keep one copy's four transfers busy; more mostly add
# CPU contention (a kernel copy from the page cache is a memcpy), which slows the event loop and
# every other pool (bench/executors_bench.py). Secrets and scripts need little, but must never
# queue behind file I/O.
DEFAULT_SIZES: dict[str, int] = {FILE_IO: 4, SECRETS: 4, SCRIPTS: 2}
_MAX_THREADS = 256


class ExecutorsConfig(ConfigModel):
    """Threads for blocking work, one pool per kind."""

    file_io: int = Field(DEFAULT_SIZES[FILE_IO], ge=1, le=_MAX_THREADS,
                         description="local filesystem calls and kernel copies")
    secrets: int = Field(DEFAULT_SIZES[SECRETS], ge=1, le=_MAX_THREADS,
                         description="Vault (hvac) calls, reading the secrets file")
    scripts: int = Field(DEFAULT_SIZES[SCRIPTS], ge=1, le=_MAX_THREADS,
                         description="loading a script before its job runs")

    def sizes(self) -> dict[str, int]:
        return {FILE_IO: self.file_io, SECRETS: self.secrets, SCRIPTS: self.scripts}


def parse_executors_section(sec: Section) -> ExecutorsConfig:
    cfg: ExecutorsConfig = sec.validate(ExecutorsConfig)
    return cfg


class BoundedExecutor:
    """A fixed-size thread pool that knows how much work it holds (for tests and metrics)."""

    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.size = size
        self._pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix=f"aftd-{name}")
        self._lock = threading.Lock()
        self._submitted = 0
        self._running = 0

    def __repr__(self) -> str:
        return f"<BoundedExecutor {self.name} size={self.size} running={self.running}>"

    @property
    def running(self) -> int:
        """Calls executing on a thread right now."""
        return self._running

    @property
    def pending(self) -> int:
        """Calls submitted and not yet finished (running plus waiting for a thread)."""
        return self._submitted

    def submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Run ``fn(*args)`` on a pool thread with the caller's context variables."""
        ctx = contextvars.copy_context()
        with self._lock:
            self._submitted += 1
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(self._pool, functools.partial(self._call, ctx, fn, *args))
        fut.add_done_callback(self._done)
        return fut

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await self.submit(fn, *args)

    def _call(self, ctx: contextvars.Context, fn: Callable[..., T], *args: Any) -> T:
        with self._lock:
            self._running += 1
        try:
            return ctx.run(fn, *args)
        finally:
            with self._lock:
                self._running -= 1

    def _done(self, _: asyncio.Future[Any]) -> None:
        with self._lock:
            self._submitted -= 1

    def shutdown(self, wait: bool = False) -> None:
        # Queued work that never started is dropped: its awaiting coroutine gets CancelledError.
        self._pool.shutdown(wait=wait, cancel_futures=True)


_sizes: dict[str, int] = dict(DEFAULT_SIZES)
_pools: dict[str, BoundedExecutor] = {}
_lock = threading.Lock()


_M_ARENA_MAX = -8  # glibc's mallopt parameter
_arenas_shared = False


def _share_malloc_arena() -> None:
    """Have glibc's malloc serve every thread from one arena (as ``MALLOC_ARENA_MAX=1``),
    unless the environment already chose.

    A thread's large allocations (a local read's 1 MiB chunk is made in the thread that reads)
    otherwise come from an arena of its own, which keeps what was freed in it: measured on a
    256 MiB upload as 8 ranged streams, 15-20 MB more peak RSS. The GIL means these threads
    hardly ever allocate at the same moment, so one arena costs no waiting.
    """
    global _arenas_shared
    if _arenas_shared or "MALLOC_ARENA_MAX" in os.environ:
        return
    _arenas_shared = True
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return
    if mallopt is not None:
        mallopt(_M_ARENA_MAX, 1)


def get(name: str) -> BoundedExecutor:
    """The pool called ``name``, created at the configured size on first use."""
    if name not in _sizes:
        raise KeyError(f"unknown executor {name!r}; known: {', '.join(NAMES)}")
    with _lock:
        pool = _pools.get(name)
        if pool is None:
            _share_malloc_arena()  # before any of our threads allocates
            pool = _pools[name] = BoundedExecutor(name, _sizes[name])
        return pool


async def run(name: str, fn: Callable[..., T], *args: Any) -> T:
    """``await run(FILE_IO, os.stat, path)``: like :func:`asyncio.to_thread` on a named pool."""
    return await get(name).submit(fn, *args)


def configure(cfg: ExecutorsConfig | Mapping[str, int]) -> None:
    """Set pool sizes; a live pool of another size is replaced (its running work finishes)."""
    sizes = cfg.sizes() if isinstance(cfg, ExecutorsConfig) else dict(cfg)
    retired: list[BoundedExecutor] = []
    with _lock:
        for name, size in sizes.items():
            if name not in _sizes:
                raise KeyError(f"unknown executor {name!r}; known: {', '.join(NAMES)}")
            _sizes[name] = size
            live = _pools.get(name)
            if live is not None and live.size != size:
                retired.append(_pools.pop(name))
    for pool in retired:
        pool._pool.shutdown(wait=False)  # not cancel_futures: queued work still runs


def shutdown(wait: bool = False) -> None:
    """Stop every pool (the daemon's close path); later use creates fresh pools."""
    with _lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.shutdown(wait=wait)
