"""inotify for a watched local directory (asyncinotify), and when not to trust it.

Events are hints, never facts: a path an event names is stat()ed through the VFS (confined to
its root) before anything fires, and a watch rescans its directory on start, after an event
queue overflow, when a new subdirectory appears, and every ``poll_s`` as a safety net. Only
events that mean "a name appeared or was written" are asked for (create, close-after-write,
moved in, attribute change, and deletes): a slowly appended file is judged by the stability
check re-reading its size and mtime, not by a flood of modify events.

inotify only sees changes made through this host's kernel: on network and FUSE mounts (NFS,
SMB/CIFS, sshfs, 9p ...) a file written by another host raises no event, so ``mode = "auto"``
polls there (:func:`inotify_trusted`, read from ``/proc/self/mountinfo``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import structlog
from asyncinotify import Inotify, Mask

__all__ = ["UNTRUSTED_FILESYSTEMS", "EventSource", "filesystem_of", "inotify_trusted"]

log = structlog.get_logger("aftd.triggers")

# Filesystems whose files other hosts change without this kernel noticing.
UNTRUSTED_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "afs", "ceph", "glusterfs", "lustre", "gpfs",
    "ocfs2", "gfs2", "vboxsf", "vmhgfs", "davfs", "ncpfs", "coda", "beegfs",
})
_FILE_MASK = (Mask.CREATE | Mask.CLOSE_WRITE | Mask.MOVED_TO | Mask.ATTRIB | Mask.DELETE
              | Mask.MOVED_FROM | Mask.DELETE_SELF | Mask.MOVE_SELF)


def filesystem_of(path: str, mountinfo: str = "/proc/self/mountinfo") -> str:
    """The type of the filesystem ``path`` lives on ("" when it cannot be told)."""
    real = os.path.realpath(path)
    best, fstype = "", ""
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields = left.split()
                if len(fields) < 5 or not right:
                    continue
                point = fields[4].replace("\\040", " ")
                inside = real == point or real.startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(best):
                    best, fstype = point, right.split()[0]
    except OSError:
        return ""
    return fstype


def inotify_trusted(path: str) -> tuple[bool, str]:
    """Whether inotify sees every change under ``path``, and the filesystem type."""
    fstype = filesystem_of(path)
    untrusted = fstype in UNTRUSTED_FILESYSTEMS or fstype.startswith("fuse")
    return not untrusted, fstype


class EventSource:
    """inotify watches on a directory (and, with ``recursive``, its subdirectories): collects
    the paths that changed, relative to the VFS root, until the watch takes them."""

    def __init__(self, vfs_root: str, directory: str, *, recursive: bool,
                 skip: tuple[str, ...] = ()) -> None:
        self.vfs_root = vfs_root
        self.directory = directory  # relative to vfs_root
        self.recursive = recursive
        self.skip = skip
        self.changed: set[str] = set()
        self.rescan = True  # everything must be listed (start, overflow, new directory)
        self.lost: str | None = None  # the watched directory went away
        self.ready = asyncio.Event()
        self._inotify: Inotify | None = None
        self._reader: asyncio.Task[None] | None = None

    def open(self) -> None:
        """Start watching (OSError when inotify is out of instances or watches)."""
        self._inotify = Inotify()
        try:
            self._add_tree(os.path.join(self.vfs_root, self.directory))
        except OSError:
            self.close()
            raise
        self._reader = asyncio.create_task(self._read(), name="aftd-trigger-inotify")

    def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None
        if self._inotify is not None:
            with contextlib.suppress(OSError):
                self._inotify.close()
            self._inotify = None

    def take(self) -> tuple[set[str], bool]:
        """The changed paths and whether a full rescan is due; both reset."""
        changed, rescan = self.changed, self.rescan
        self.changed, self.rescan = set(), False
        self.ready.clear()
        return changed, rescan

    # -- watching -------------------------------------------------------------------------------
    def _add_tree(self, top: str) -> None:
        assert self._inotify is not None
        self._inotify.add_watch(top, _FILE_MASK | Mask.ONLYDIR)
        if not self.recursive:
            return
        for entry in os.scandir(top):
            if entry.is_dir(follow_symlinks=False) and not entry.name.startswith(".") \
                    and self._rel(entry.path) not in self.skip:
                self._add_tree(entry.path)

    def _rel(self, path: str) -> str:
        return os.path.relpath(path, self.vfs_root).replace(os.sep, "/")

    async def _read(self) -> None:
        assert self._inotify is not None
        async for event in self._inotify:
            self._handle(event.mask, event.path)
            self.ready.set()

    def _handle(self, mask: Mask, path: Path | None) -> None:
        if Mask.Q_OVERFLOW in mask:
            log.warning("trigger_inotify_overflow", directory=self.directory)
            self.rescan = True
            return
        if path is None:
            return
        rel = self._rel(str(path))
        if mask & (Mask.DELETE_SELF | Mask.MOVE_SELF | Mask.IGNORED):
            if rel == self.directory or (rel == "." and not self.directory):
                self.lost = "the watched directory was removed or moved"
            return
        if Mask.ISDIR in mask:
            if self.recursive and mask & (Mask.CREATE | Mask.MOVED_TO) \
                    and not path.name.startswith(".") and rel not in self.skip:
                with contextlib.suppress(OSError):  # gone again already: nothing to watch
                    self._add_tree(str(path))
                self.rescan = True  # files may have landed before the watch was added
            return
        if not rel.startswith("../"):
            self.changed.add(rel)
