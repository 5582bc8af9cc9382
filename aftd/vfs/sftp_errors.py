"""What the ``sftp`` backend raises for what asyncssh or the socket raised."""

from __future__ import annotations

from typing import Protocol

import asyncssh

from aftd.errors import TransferError
from aftd.vfs.base import PathExistsError, PathNotFoundError, TransientError, fail

__all__ = ["ERRORS", "LOST", "SftpOwner", "translate"]


class _Pool(Protocol):
    def discard_dead(self) -> None: ...


class SftpOwner(Protocol):
    """What error translation needs of the SFTP backend (:class:`aftd.vfs.sftp.SftpVfs`);
    a protocol, so that the backend's helper modules need not import the backend."""

    @property
    def name(self) -> str: ...

    @property
    def pool(self) -> _Pool: ...

LOST = (asyncssh.SFTPConnectionLost, asyncssh.SFTPNoConnection, asyncssh.ConnectionLost,
        asyncssh.DisconnectError, asyncssh.ChannelOpenError, BrokenPipeError,
        ConnectionError)
# Everything :func:`translate` turns into a TransferError.
ERRORS = (*LOST, asyncssh.SFTPError, OSError)


def translate(vfs: SftpOwner, rel: str, exc: BaseException) -> TransferError:
    """The error a script sees for what asyncssh or the socket raised; a lost connection is
    also dropped from the pool, and is worth retrying (:class:`TransientError`)."""
    if isinstance(exc, LOST):
        vfs.pool.discard_dead()
        return fail(TransientError, vfs.name, rel, f"connection lost: {exc}")
    return _sftp_error(vfs.name, rel, exc)


def _sftp_error(vfs: str, rel: str, exc: BaseException) -> TransferError:
    if isinstance(exc, asyncssh.SFTPNoSuchFile | FileNotFoundError):
        return fail(PathNotFoundError, vfs, rel, "no such file or directory")
    if isinstance(exc, asyncssh.SFTPFileAlreadyExists | FileExistsError):
        return fail(PathExistsError, vfs, rel, "already exists")
    if isinstance(exc, asyncssh.SFTPPermissionDenied | PermissionError):
        return fail(TransferError, vfs, rel, "permission denied")
    reason = getattr(exc, "reason", "") or str(exc) or type(exc).__name__
    return fail(TransferError, vfs, rel, reason)
