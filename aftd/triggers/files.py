"""Which files a watch considers, and what makes one version of a file.

A file version is (vfs, path, size, mtime): :func:`file_key` spells it as the key the fire is
claimed under, and :func:`key_digest` shortens a key to 64 bits for the set a watch keeps in
memory of versions already fired (8 bytes a file instead of its path: a directory of 100,000
files costs a few MB). Two versions colliding in 64 bits is about as likely as 1 in 10^9 for
a million files; the store, which keys on the full text, stays the judge of what is claimed.
"""

from __future__ import annotations

import fnmatch
import hashlib

from aftd.vfs.base import FileInfo

__all__ = ["TEMPORARY_SUFFIXES", "file_key", "is_candidate", "is_temporary", "key_digest"]

# Names uploaders write to before renaming into place (and aftd's own copies: .NAME.*.aftd-part).
TEMPORARY_SUFFIXES = (".part", ".tmp", ".aftd-part")


def is_temporary(name: str) -> bool:
    """``*.part``, ``*.tmp``, ``.~*``, any name starting with a dot, aftd's ``.aftd-part``."""
    return name.startswith(".") or name.lower().endswith(TEMPORARY_SUFFIXES)


def is_candidate(info: FileInfo, pattern: str) -> bool:
    """A regular file (not a link, directory or special file) that may fire."""
    if info.is_dir or info.is_link or info.special:
        return False
    return not is_temporary(info.name) and fnmatch.fnmatchcase(info.name, pattern)


def file_key(vfs: str, path: str, size: int, mtime: float) -> str:
    """The fire key of a file version; ``repr`` keeps every bit of the mtime."""
    return f"{vfs}\0{path}\0{size}\0{mtime!r}"


def key_digest(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8", "surrogateescape"),
                                          digest_size=8).digest(), "big")
