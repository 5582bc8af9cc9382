"""Listing a source tree for a copy: include/exclude filters, symlinks, special files.

Listings do not follow symlinks (``lstat`` semantics on every backend). By default a symlink
inside a tree is skipped, logged and reported, as rsync and rclone do: following links is how a
tree copy escapes its root or never ends (``ln -s . a``). With ``follow=True`` a link is
followed when its target stays inside the root; a directory reached that way is entered only
if it is not already one of the directories above it (compared by :meth:`Vfs.identity`:
device and inode locally, the server's canonical path over SFTP). FIFOs, sockets and devices
are never copied.
"""

from __future__ import annotations

import asyncio
import fnmatch
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import structlog

from aftd.errors import TransferError
from aftd.tasks import first_error
from aftd.vfs.base import FileInfo, PathEscapeError, PathNotFoundError, Vfs
from aftd.vfs.result import Failed, Skipped

__all__ = ["MAX_DEPTH", "Listing", "Walker", "failure", "matches"]

log = structlog.get_logger("aftd.vfs.copy")

NOT_FOLLOWED = "symlink (not followed; pass follow_symlinks=True to follow links inside the root)"
OUTSIDE = "symlink leads outside the VFS root"
DANGLING = "dangling symlink (its target does not exist)"
LOOP = "symlink loop (leads back to a directory above it)"
SPECIAL = "not a regular file, directory or symlink"
# Directory depth when following links: a safety net beyond loop detection, for a backend
# whose identity() cannot see through links.
MAX_DEPTH = 512
TOO_DEEP = f"more than {MAX_DEPTH} directories deep while following symlinks"
LISTS_IN_FLIGHT = 16


@dataclass
class Listing:
    files: list[FileInfo] = field(default_factory=list)
    links: list[Skipped] = field(default_factory=list)
    special: list[Skipped] = field(default_factory=list)
    failed: list[Failed] = field(default_factory=list)


def matches(rel: str, name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(name, p) for p in patterns)


def failure(path: str, exc: Exception) -> Failed:
    text = str(exc) if isinstance(exc, TransferError) else f"{type(exc).__name__}: {exc}"
    return Failed(path, text)


@dataclass
class Walker:
    src: Vfs
    top: str
    include: Sequence[str] = ()
    exclude: Sequence[str] = ()
    follow: bool = False
    keep_going: bool = False  # on_error="continue": an unreadable subdirectory is reported
    out: Listing = field(default_factory=Listing)

    async def run(self) -> Listing:
        """Level by level, the directories of a level listed at once (a listing is a few
        round trips on a remote backend; one after another they add up)."""
        above: tuple[Hashable, ...] = (await self.src.identity(self.top),) if self.follow else ()
        todo = [(self.top, above)]
        gate = asyncio.Semaphore(LISTS_IN_FLIGHT)

        async def listed(d: str) -> list[FileInfo]:
            async with gate:
                return await self._list(d)

        while todo:
            level, todo = todo, []
            try:
                async with asyncio.TaskGroup() as tg:
                    tasks = [tg.create_task(listed(d)) for d, _ in level]
            except BaseExceptionGroup as eg:
                raise first_error(eg) from None
            for (_, above), task in zip(level, tasks, strict=True):
                for e in task.result():
                    await self._visit(e, above, todo)
        return self.out

    async def _list(self, d: str) -> list[FileInfo]:
        try:
            entries = await self.src.listdir(d)
        except TransferError as exc:
            if not self.keep_going or d == self.top:
                raise
            self._fail(d, exc)
            return []
        return sorted(entries, key=lambda e: e.path)

    async def _visit(self, e: FileInfo, above: tuple[Hashable, ...],
                     todo: list[tuple[str, tuple[Hashable, ...]]]) -> None:
        rel = e.path[len(self.top):].lstrip("/")
        if matches(rel, e.name, self.exclude):
            return
        if e.is_link:
            target = await self._link(e)
            if target is None:
                return
            e = target
        if e.special:
            self._skip(self.out.special, e.path, SPECIAL)
        elif e.is_dir:
            await self._descend(e, above, todo)
        elif not self.include or matches(rel, e.name, self.include):
            self.out.files.append(e)

    async def _link(self, e: FileInfo) -> FileInfo | None:
        """The link's target (under the link's path) when it may be followed, else None."""
        reason = NOT_FOLLOWED
        if self.follow:
            try:
                return await self.src.follow_link(e.path)
            except PathEscapeError:
                reason = OUTSIDE
            except PathNotFoundError:
                reason = DANGLING
            except TransferError as exc:  # e.g. a chain of links too long to resolve
                reason = f"symlink cannot be followed: {exc}"
        self._skip(self.out.links, e.path, reason)
        return None

    async def _descend(self, e: FileInfo, above: tuple[Hashable, ...],
                       todo: list[tuple[str, tuple[Hashable, ...]]]) -> None:
        if not self.follow:
            todo.append((e.path, above))
            return
        try:
            ident = await self.src.identity(e.path)
        except TransferError as exc:
            if not self.keep_going:
                raise
            self._fail(e.path, exc)
            return
        if ident in above:
            self._skip(self.out.links, e.path, LOOP)
        elif len(above) > MAX_DEPTH:
            self._skip(self.out.links, e.path, TOO_DEEP)
        else:
            todo.append((e.path, (*above, ident)))

    def _skip(self, into: list[Skipped], path: str, reason: str) -> None:
        into.append(Skipped(path, reason))
        event = "copy_symlink_skipped" if into is self.out.links else "copy_special_file_skipped"
        log.info(event, vfs=self.src.name, path=path, reason=reason)

    def _fail(self, path: str, exc: Exception) -> None:
        self.out.failed.append(failure(path, exc))
        log.warning("copy_file_failed", vfs=self.src.name, path=path, error=str(exc))
