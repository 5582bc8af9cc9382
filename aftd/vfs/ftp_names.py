"""Path names FTP would misread, refused before anything is sent.

CR or LF in a name would end the command and start another (command injection), and
backslashes or percent-encoded separators (``%2F``, ``%5C``) are separators to some servers.
Names a server lists that hold a separator, CR/LF, or are ``.``/``..`` are left out of listings.
"""

from __future__ import annotations

import re

from aftd.vfs.base import PathEscapeError, fail

__all__ = ["refuse_unsafe", "safe_name"]

_ENCODED_SEPARATOR = re.compile(r"%(2f|5c)", re.IGNORECASE)


def refuse_unsafe(vfs: str, path: object) -> None:
    """Refuse what FTP would misread; raises :class:`PathEscapeError`."""
    if not isinstance(path, str):
        return  # normalize() names the type
    if "\r" in path or "\n" in path:
        raise fail(PathEscapeError, vfs, path, "path contains CR or LF (FTP command injection)")
    if "\\" in path:
        raise fail(PathEscapeError, vfs, path, "path contains a backslash")
    if _ENCODED_SEPARATOR.search(path):
        raise fail(PathEscapeError, vfs, path, "path contains an encoded separator (%2F or %5C)")


def safe_name(name: str) -> bool:
    """Whether a name from a listing is one plain name (no separator, CR/LF, ``.``/``..``)."""
    return bool(name) and name not in (".", "..") and not any(
        ch in name for ch in ("/", "\\", "\r", "\n", "\x00"))
