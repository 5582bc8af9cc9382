"""A watch trigger: a job per file version that arrives in a directory of a VFS, once stable.

A file is *pending* from the first time it is seen until its size and mtime have stayed the
same for ``stable_s`` (judged by a listing or a ``stat`` at least ``stable_s`` after the version
was first seen); then its version is claimed in the store and its job submitted. Versions
already claimed (in the store; remembered in memory as 64-bit digests) are skipped, so a file
left in place does not fire again, across restarts too; a file that changes is a new version
and fires again.

Listings go through the VFS protocol, so any backend can be watched. A local VFS on a local
filesystem also gets inotify events (:mod:`aftd.triggers.inotify`), which bring an arrival in
at once instead of at the next listing. A listing or event source that fails (unreachable
server, missing directory) is logged, shown as ``error`` and retried with backoff; other
triggers go on. After a complete listing, the rows of files that are no longer there are
forgotten (at most every ``_FORGET_EVERY_S``), so a file that comes back later fires again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass
from typing import Any

import structlog

from aftd.triggers.base import Backoff, RunResult, TriggerContext, TriggerRuntime, retry_store
from aftd.triggers.files import file_key, is_candidate, key_digest
from aftd.triggers.inotify import EventSource, inotify_trusted
from aftd.triggers.listing import scan
from aftd.triggers.store import Fire
from aftd.triggers.watch_config import WatchTriggerConfig
from aftd.vfs.base import FileInfo, PathNotFoundError, Vfs
from aftd.vfs.paths import join

__all__ = ["WatchRuntime"]

log = structlog.get_logger("aftd.triggers")

# Forgetting rows of vanished files reads every key of the trigger: not on every poll.
_FORGET_EVERY_S = 300.0
# More changed paths than this in one batch of events: one listing is cheaper than a stat each.
_STAT_LIMIT = 256
# A stability deadline is checked this much later, so a stat after it sees the settled file.
_SETTLE_S = 0.05


@dataclass
class _Pending:
    size: int
    mtime: float
    since: float  # monotonic: when this version was first seen
    seen: int  # the listing generation that saw it last


class WatchRuntime(TriggerRuntime):
    cfg: WatchTriggerConfig

    def __init__(self, cfg: WatchTriggerConfig, ctx: TriggerContext) -> None:
        super().__init__(cfg, ctx)
        self.known: set[int] = set()
        self.pending: dict[str, _Pending] = {}
        self.mode = "poll"
        self._events: EventSource | None = None
        self._generation = 0
        self._next_scan = 0.0
        self._last_forget = 0.0
        self._scan_now = False
        self._backoff = Backoff(min(1.0, self.cfg.poll_s), max(60.0, self.cfg.poll_s))

    @property
    def directory(self) -> str:
        return join(self.cfg.path)

    @property
    def skip(self) -> tuple[str, ...]:
        return (join(self.cfg.move_to),) if self.cfg.move_to else ()

    def describe(self) -> dict[str, Any]:
        return {"vfs": self.cfg.vfs, "path": self.cfg.path, "pattern": self.cfg.pattern,
                "recursive": self.cfg.recursive, "mode": self.mode, "after": self.cfg.after}

    def pending_files(self) -> int:
        return len(self.pending)

    def next_fire_at(self) -> float | None:
        if not self.pending:
            return None
        first = min(p.since for p in self.pending.values())
        return time.time() + max(0.0, first + self.cfg.stable_s - time.monotonic())

    async def run_now(self) -> RunResult:
        self._scan_now = True
        self.wake()
        return RunResult("scanning", detail="the directory is listed now")

    async def set_paused(self, paused: bool) -> None:
        await super().set_paused(paused)
        if paused:
            self.pending.clear()
        else:
            self._scan_now = True  # what arrived meanwhile

    # -- the loop -------------------------------------------------------------------------------
    async def run(self) -> None:
        keys = await retry_store(self.name, "load", lambda: self.ctx.store.fire_keys(self.name))
        self.known = {key_digest(k) for k in keys}
        del keys
        try:
            while True:
                if self.paused:
                    self._close_events()
                    await self.wait_wake(None)
                    continue
                try:
                    await self._cycle()
                except Exception as exc:  # an unreachable VFS, a failing store: retried
                    self._close_events()
                    self.failed("poll", exc)
                    await self.wait_wake(self._backoff.next())
                    continue
                self._backoff.reset()
                await self._sleep()
        finally:
            self._close_events()

    async def _cycle(self) -> None:
        vfs = self.ctx.vfs(self.cfg.vfs)
        self._open_events(vfs)
        full = self._scan_now or time.monotonic() >= self._next_scan
        changed: set[str] = set()
        if self._events is not None:
            if self._events.lost:
                raise PathNotFoundError(f"vfs {self.cfg.vfs!r}: {self.directory or '/'!r}: "
                                        f"{self._events.lost}")
            changed, rescan = self._events.take()
            full = full or rescan or len(changed) > _STAT_LIMIT
        if full:
            await self._full_scan(vfs)
        elif changed:
            await self._observe_paths(vfs, changed)
        await self._fire_ready(vfs, rechecked=full)
        self.recovered()

    async def _sleep(self) -> None:
        """Until the next listing, the next stability deadline, an event, or a wake-up."""
        deadlines = [self._next_scan]
        if self.pending:
            first = min(p.since for p in self.pending.values())
            deadlines.append(first + self.cfg.stable_s + _SETTLE_S)
        timeout = max(0.0, min(deadlines) - time.monotonic())
        if self._events is None:
            await self.wait_wake(timeout)
            return
        waker = asyncio.ensure_future(self._wake.wait())
        events = asyncio.ensure_future(self._events.ready.wait())
        try:
            await asyncio.wait({waker, events}, timeout=timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            waker.cancel()
            events.cancel()
        self._wake.clear()

    # -- event source ---------------------------------------------------------------------------
    def _open_events(self, vfs: Vfs) -> None:
        if self._events is not None:
            return
        if self.cfg.mode == "poll":
            self.mode = "poll"
            return
        root = getattr(vfs, "root", None)
        if not (vfs.features.local_path and isinstance(root, str)):
            self.mode = "poll"
            return
        directory = os.path.join(root, self.directory)
        trusted, fstype = inotify_trusted(directory)
        if not trusted and self.cfg.mode == "auto":
            self._note_mode("poll", f"{fstype} mount: inotify misses other hosts' changes")
            return
        events = EventSource(root, self.directory, recursive=self.cfg.recursive, skip=self.skip)
        try:
            events.open()
        except OSError as exc:
            if isinstance(exc, FileNotFoundError | NotADirectoryError):
                raise PathNotFoundError(f"vfs {self.cfg.vfs!r}: {self.directory or '/'!r}: "
                                        "no such directory", vfs=self.cfg.vfs,
                                        path=self.directory) from None
            self._note_mode("poll", f"inotify unavailable: {exc.strerror or exc}")
            return
        self._events = events
        self._note_mode("inotify", f"filesystem {fstype or 'unknown'}")

    def _note_mode(self, mode: str, reason: str) -> None:
        if mode != self.mode or self._events is None:
            log.info("trigger_watch_mode", trigger=self.name, mode=mode, reason=reason)
        self.mode = mode

    def _close_events(self) -> None:
        if self._events is not None:
            self._events.close()
            self._events = None

    # -- observing ------------------------------------------------------------------------------
    async def _full_scan(self, vfs: Vfs) -> None:
        started = time.monotonic()
        self._scan_now = False
        self._generation += 1
        present: set[int] = set()
        async for info in scan(vfs, self.directory, recursive=self.cfg.recursive,
                               skip=self.skip):
            if is_candidate(info, self.cfg.pattern):
                present.add(self._observe(info, started))
        self.pending = {p: v for p, v in self.pending.items() if v.seen == self._generation}
        self._next_scan = time.monotonic() + self.cfg.poll_s
        if self.ctx.metrics is not None:
            self.ctx.metrics.observe_watch_poll(self.name, time.monotonic() - started)
        if time.monotonic() - self._last_forget >= _FORGET_EVERY_S or not self._last_forget:
            await self._forget_vanished(present)

    def _observe(self, info: FileInfo, now: float) -> int:
        """Track one listed file; its version's digest."""
        digest = key_digest(file_key(self.cfg.vfs, info.path, info.size, info.mtime))
        if digest in self.known:
            self.pending.pop(info.path, None)
            return digest
        entry = self.pending.get(info.path)
        if entry is None or (entry.size, entry.mtime) != (info.size, info.mtime):
            self.pending[info.path] = _Pending(info.size, info.mtime, now, self._generation)
        else:
            entry.seen = self._generation
        return digest

    async def _observe_paths(self, vfs: Vfs, paths: set[str]) -> None:
        now = time.monotonic()
        for path in sorted(paths):
            info = None
            if self._in_scope(path):
                with contextlib.suppress(PathNotFoundError):
                    info = await vfs.stat(path)
            if info is not None and is_candidate(info, self.cfg.pattern):
                self._observe(info, now)
            else:  # gone, or no longer a file that may fire
                self.pending.pop(path, None)

    def _in_scope(self, path: str) -> bool:
        base = self.directory
        rel = path[len(base) + 1:] if base else path
        if base and not path.startswith(base + "/"):
            return False
        parts = rel.split("/")
        if not self.cfg.recursive and len(parts) != 1:
            return False
        inside_skip = any(path == s or path.startswith(s + "/") for s in self.skip)
        return not inside_skip and not any(p.startswith(".") for p in parts[:-1])

    async def _forget_vanished(self, present: set[int]) -> None:
        """Rows of files no longer listed: forgotten, so the file fires again if it returns."""
        self._last_forget = time.monotonic()
        keys = await self.ctx.store.fire_keys(self.name)
        vanished = [k for k in keys if key_digest(k) not in present]
        if vanished:
            for key in await self.ctx.store.forget(self.name, vanished):
                self.known.discard(key_digest(key))

    # -- firing ---------------------------------------------------------------------------------
    def _ready(self, now: float) -> list[str]:
        return sorted(p for p, v in self.pending.items() if now - v.since >= self.cfg.stable_s)

    async def _fire_ready(self, vfs: Vfs, *, rechecked: bool) -> None:
        now = time.monotonic()
        ready = self._ready(now)
        if not ready:
            return
        if not rechecked:  # events only: read the files again before trusting them
            if len(ready) > _STAT_LIMIT:
                await self._full_scan(vfs)
            else:
                await self._observe_paths(vfs, set(ready))
            ready = self._ready(now)
        fires = [self._fire_of(path, self.pending[path]) for path in ready]
        won = await self.ctx.store.claim(fires, time.time())
        for fire in fires:
            self.known.add(key_digest(fire.key))
            self.pending.pop(fire.path or "", None)
        if len(won) < len(fires):
            log.info("trigger_files_claimed_elsewhere", trigger=self.name,
                     count=len(fires) - len(won))
        await self._submit(won)

    def _fire_of(self, path: str, entry: _Pending) -> Fire:
        params = {**self.cfg.params, "trigger": self.name, "vfs": self.cfg.vfs, "path": path,
                  "size": entry.size, "mtime": entry.mtime}
        return Fire(trigger=self.name, key=file_key(self.cfg.vfs, path, entry.size, entry.mtime),
                    kind="watch", script=self.cfg.script, params=params, path=path,
                    size=entry.size, mtime=entry.mtime)

    async def _submit(self, fires: list[Fire]) -> None:
        done, later = await self.ctx.firing.submit_many(fires)
        for fire in done:
            if fire.state == "submitted":
                self.fired(fire)
        if any(f.state == "failed" for f in done):
            await self.refresh_failed()
        if later is not None:  # the manager submits the rest when the runner takes jobs again
            log.info("trigger_fires_deferred", trigger=self.name, count=len(fires) - len(done),
                     reason=str(later))
