"""Path confinement (README, "Invariants"): every path is made relative to the VFS root or refused.

Paths come from claims, params and scripts, so they are untrusted. We normalise lexically
(``posixpath``-style, no filesystem access) and refuse anything that would climb above the root.
Symlinks are a backend concern (the local backend resolves them; see ``aftd.vfs.local``).
"""

from __future__ import annotations

import posixpath

from aftd.vfs.base import PathEscapeError, fail

__all__ = ["join", "normalize", "parent", "to_abs"]


def normalize(vfs: str, root: str, path: str) -> str:
    """Return ``path`` relative to ``root`` ("" is the root itself), or raise PathEscapeError.

    An absolute path is accepted only when it lies under ``root``; ``..`` may not leave the root.
    """
    if not isinstance(path, str):
        raise fail(PathEscapeError, vfs, str(path),
                   f"path must be a string, got {type(path).__name__}")
    if "\x00" in path:
        raise fail(PathEscapeError, vfs, path.replace("\x00", "\\0"), "path contains a NUL byte")
    rel = path
    if path.startswith("/"):
        rroot = root.rstrip("/")
        if rroot and path != rroot and not path.startswith(rroot + "/"):
            raise fail(PathEscapeError, vfs, path,
                       f"absolute path is outside the VFS root {root!r}")
        rel = path[len(rroot):]
    parts: list[str] = []
    for part in rel.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise fail(PathEscapeError, vfs, path, "path escapes the VFS root")
            parts.pop()
            continue
        parts.append(part)
    return "/".join(parts)


def to_abs(root: str, rel: str) -> str:
    """The backend path of an already-normalised relative path."""
    if not rel:
        return root
    return root.rstrip("/") + "/" + rel


def join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p.strip("/"))


def parent(rel: str) -> str:
    return posixpath.dirname(rel)
