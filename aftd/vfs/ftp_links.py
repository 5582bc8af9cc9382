"""Symlinks on an FTP server, for copies with ``follow_symlinks=True``.

FTP has no ``readlink`` or ``realpath``: a link's target is known only from a ``LIST`` line
(``name -> target``). :class:`LinkMap` remembers the targets listings showed and resolves a path
lexically through them, the way the kernel would on the server, refusing any target that leads
out of the VFS root. An absolute target is read in the server's view of paths, as the root is
(a chrooted server resolves it inside its chroot).
"""

from __future__ import annotations

import posixpath
from collections import OrderedDict

from aftd.errors import TransferError
from aftd.vfs.base import PathEscapeError, fail
from aftd.vfs.paths import normalize

__all__ = ["LinkMap"]

MAX_LINKS = 100_000  # targets remembered (a bounded cache: the oldest go first)
MAX_HOPS = 40  # links followed while resolving one path, as the kernel's ELOOP limit
OUTSIDE = "a symlink leads outside the VFS root"


class LinkMap:
    def __init__(self, vfs: str) -> None:
        self.vfs = vfs
        self._targets: OrderedDict[str, str] = OrderedDict()  # rel path of a link -> target

    def __contains__(self, rel: str) -> bool:
        return rel in self._targets

    def remember(self, rel: str, target: str) -> None:
        self._targets[rel] = target
        self._targets.move_to_end(rel)
        while len(self._targets) > MAX_LINKS:
            self._targets.popitem(last=False)

    def canonical(self, rel: str, root: str) -> str:
        """``rel`` with every remembered link replaced by its target; raises
        :class:`PathEscapeError` when a target leaves ``root``."""
        parts: list[str] = []
        todo = rel.split("/") if rel else []
        hops = 0
        while todo:
            part = todo.pop(0)
            if part == "..":
                if not parts:
                    raise fail(PathEscapeError, self.vfs, rel, OUTSIDE)
                parts.pop()
            elif part not in ("", "."):
                target = self._targets.get("/".join([*parts, part]))
                if target is None:
                    parts.append(part)
                    continue
                hops += 1
                if hops > MAX_HOPS:
                    raise fail(TransferError, self.vfs, rel, "too many levels of symlinks")
                if target.startswith("/"):
                    parts, target = [], self._inside(rel, target, root)
                todo = target.split("/") + todo
        return "/".join(parts)

    def _inside(self, rel: str, target: str, root: str) -> str:
        """An absolute target as a path relative to the root, or PathEscapeError."""
        clean, top = posixpath.normpath(target), root.rstrip("/")
        if top and clean != top and not clean.startswith(top + "/"):
            raise fail(PathEscapeError, self.vfs, rel, OUTSIDE)
        return normalize(self.vfs, root, clean)
