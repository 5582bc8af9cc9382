"""What the ``local`` backend raises for an ``OSError``."""

from __future__ import annotations

import errno

from aftd.errors import TransferError
from aftd.vfs.base import PathEscapeError, PathExistsError, PathNotFoundError, fail
from aftd.vfs.confine import EscapeError

__all__ = ["os_error"]


def os_error(vfs: str, rel: str, exc: OSError) -> TransferError:
    if isinstance(exc, EscapeError):
        return fail(PathEscapeError, vfs, rel, exc.strerror or "path leaves the VFS root")
    if isinstance(exc, FileNotFoundError):
        return fail(PathNotFoundError, vfs, rel, "no such file or directory")
    if isinstance(exc, FileExistsError):
        return fail(PathExistsError, vfs, rel, "already exists")
    if exc.errno == errno.ELOOP:
        return fail(PathEscapeError, vfs, rel,
                    "is a symlink where none is allowed, or too many levels of symlinks")
    if exc.errno == errno.ENXIO:  # O_WRONLY|O_NONBLOCK on a FIFO nobody reads
        return fail(TransferError, vfs, rel, "is not a regular file (a FIFO or a device)")
    if exc.errno == errno.EXDEV:  # openat2 refused a step out of the root
        return fail(PathEscapeError, vfs, rel, "a symlink leads outside the VFS root")
    return fail(TransferError, vfs, rel, exc.strerror or type(exc).__name__)
