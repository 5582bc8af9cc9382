"""``after = "move" | "delete"``: what happens to a watched file once its job succeeded.

The step runs only after success (a failed job leaves the file where it is), and only on the
version of the file that fired: a file that changed since (a new size or mtime) is left alone,
because the new version fires a job of its own. A step that fails (the VFS is unreachable) is
retried with backoff; the row stays ``succeeded`` meanwhile, so a step owed when the daemon
stops is done after the next start. A move keeps the file's path below the watched directory
(``in/sub/a.csv`` → ``done/sub/a.csv``) and adds a UTC timestamp to the name when the target
exists (``a.20260101T020000Z.csv``): a move never replaces a file.
"""

from __future__ import annotations

import posixpath
from datetime import UTC, datetime

import structlog

from aftd.triggers.store import Fire
from aftd.triggers.watch_config import WatchTriggerConfig
from aftd.vfs.base import PathExistsError, PathNotFoundError, Vfs
from aftd.vfs.paths import join

__all__ = ["move_target", "run_after"]

log = structlog.get_logger("aftd.triggers")


def move_target(cfg: WatchTriggerConfig, path: str) -> str:
    """Where ``path`` goes: its place below the watched directory, under ``move_to``."""
    base = join(cfg.path)
    rel = path[len(base) + 1:] if base and path.startswith(base + "/") else path
    return join(cfg.move_to, rel)


def _stamped(target: str) -> str:
    head, name = posixpath.split(target)
    stem, dot, ext = name.rpartition(".")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    renamed = f"{stem}.{stamp}.{ext}" if dot and stem else f"{name}.{stamp}"
    return join(head, renamed)


async def run_after(cfg: WatchTriggerConfig | None, fire: Fire, vfs: Vfs) -> str:
    """Do the step owed for ``fire`` (whose job succeeded); what was done, for the log."""
    action = cfg.after if cfg is not None else "leave"
    path = fire.path or ""
    if action == "leave" or not path:
        return "left"
    try:
        info = await vfs.stat(path)
    except PathNotFoundError:
        return "gone"
    if (info.size, info.mtime) != (fire.size, fire.mtime):
        log.info("trigger_after_skipped", trigger=fire.trigger, path=path,
                 reason="the file changed after its job fired; the new version fires itself")
        return "changed"
    if action == "delete":
        await vfs.remove(path)
        return "deleted"
    assert cfg is not None
    return await _move(cfg, fire, vfs, path)


async def _move(cfg: WatchTriggerConfig, fire: Fire, vfs: Vfs, path: str) -> str:
    target = move_target(cfg, path)
    await vfs.makedirs(posixpath.dirname(target))
    try:
        await vfs.rename(path, target)
    except PathExistsError:
        target = _stamped(target)
        await vfs.rename(path, target)
    log.info("trigger_file_moved", trigger=fire.trigger, path=path, to=target)
    return f"moved to {target}"
