"""Listing a watched directory through the VFS protocol (``scandir``: ``listdir`` a page at a
time where the backend streams), so any backend can be watched; a recursive walk skips hidden
directories, symlinks and the ``move_to`` directory."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aftd.triggers.files import is_temporary
from aftd.vfs.base import FileInfo, PathNotFoundError, Vfs
from aftd.vfs.paths import join

__all__ = ["scan"]


async def scan(vfs: Vfs, path: str, *, recursive: bool,
               skip: tuple[str, ...] = ()) -> AsyncIterator[FileInfo]:
    """Every entry under ``path`` that is not a directory (directories are walked when
    ``recursive``); ``skip`` are directories (relative to the VFS root) left out. Any error is
    raised (a listing that misses a subdirectory must not pass for a complete one), except a
    subdirectory that vanished between its parent's listing and its own."""
    todo = [path]
    while todo:
        current = todo.pop()
        try:
            async for info in vfs.scandir(current):
                if not info.is_dir:
                    yield info
                elif recursive and not info.is_link and not is_temporary(info.name) \
                        and info.path not in skip:
                    todo.append(join(info.path))
        except PathNotFoundError:
            if current == path:
                raise
