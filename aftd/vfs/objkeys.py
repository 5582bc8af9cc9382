"""Object keys for the object-store backends (S3, Azure Blob, GCS): confinement and mtimes.

A path of an object-store VFS is relative to its bucket (or container) and ``prefix``; the key
is ``prefix + path``. Paths come from claims, params and scripts, so they are untrusted, and an
object store has no filesystem to resolve them against: what a key means is decided here. We
refuse what could name a key outside the prefix, on this server or on one that decodes keys
into file names (``rclone serve s3``, gateways to a filesystem): absolute paths, ``..`` that
climbs above the root, backslashes, percent-encoded ``/``, ``\\`` and ``.`` (``%2F``, ``%5C``,
``%2E``), control characters. Inner ``..`` that stays inside is resolved lexically, as the
other backends do.

Modification times travel in user metadata under ``mtime`` as seconds since the epoch in a
decimal string, which is what rclone writes and reads (``X-Amz-Meta-Mtime`` on S3), so files
uploaded by either tool keep their times for the other.

Nothing here imports a third-party package: the config models use :func:`check_prefix`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from aftd.vfs.base import PathEscapeError, fail
from aftd.vfs.paths import join, normalize

__all__ = ["MTIME_KEY", "ObjectKeys", "check_prefix", "mtime_from_meta", "mtime_meta"]

MTIME_KEY = "mtime"
_ENCODED = re.compile(r"%(2f|5c|2e)", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _refusal(path: str) -> str | None:
    """Why ``path`` may not name an object, or None when it may (before normalising)."""
    if _CONTROL.search(path):
        return "path contains a control character"
    if "\\" in path:
        return "backslashes are not allowed in object paths"
    if _ENCODED.search(path):
        return "percent-encoded separators or dots (%2F, %5C, %2E) are not allowed"
    if path.startswith("/"):
        return "absolute paths are not allowed: paths are relative to the bucket and prefix"
    return None


def check_prefix(value: str) -> str:
    """A config ``prefix``, normalised to ``"a/b/"`` (or ``""``); raises ValueError."""
    body = value.strip("/")
    if not body:
        return ""
    why = _refusal(body)
    if why is None and any(p in ("", ".", "..") for p in body.split("/")):
        why = "empty, '.' and '..' components are not allowed"
    if why:
        raise ValueError(why)
    return body + "/"


class ObjectKeys:
    """Maps the paths of one VFS to keys under its prefix, and keys back to paths."""

    def __init__(self, vfs: str, prefix: str) -> None:
        self.vfs = vfs
        self.prefix = check_prefix(prefix)

    def rel(self, path: str) -> str:
        """``path`` confined and normalised ("" is the root), or PathEscapeError."""
        if not isinstance(path, str):
            raise fail(PathEscapeError, self.vfs, str(path),
                       f"path must be a string, got {type(path).__name__}")
        why = _refusal(path)
        shown = _CONTROL.sub("?", path)
        if why:
            raise fail(PathEscapeError, self.vfs, shown, why)
        return normalize(self.vfs, "", path)

    def key(self, rel: str) -> str:
        """The key of a normalised path."""
        return self.prefix + rel

    def dir_prefix(self, rel: str) -> str:
        """The key prefix of the objects inside the directory ``rel``."""
        return f"{self.prefix}{rel}/" if rel else self.prefix

    def child(self, parent_rel: str, key: str, parent_prefix: str) -> str | None:
        """The path of ``key`` listed under ``parent_prefix``, or None when that key cannot
        be addressed through this VFS (it would be refused or read as another path)."""
        name = key[len(parent_prefix):].rstrip("/")
        if not name or "/" in name or name in (".", "..") or _refusal(name):
            return None
        return join(parent_rel, name)


def mtime_meta(mtime: float) -> str:
    """The metadata value for a modification time (nanosecond precision, like rclone)."""
    return f"{mtime:.9f}"


def mtime_from_meta(meta: Mapping[str, str] | None, fallback: float) -> float:
    """The ``mtime`` stored in user metadata (key compared case-insensitively), else
    ``fallback`` (the object's last-modified time)."""
    for k, v in (meta or {}).items():
        if k.lower() == MTIME_KEY:
            try:
                t = float(v)
            except (TypeError, ValueError):
                break
            if math.isfinite(t):
                return t
            break
    return fallback
