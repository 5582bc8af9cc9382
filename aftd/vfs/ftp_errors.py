"""What the ``ftp`` backend raises for what the server or the connection did."""

from __future__ import annotations

import ftplib

from aftd.errors import TransferError
from aftd.vfs import ftp_ops as ops
from aftd.vfs.base import PathEscapeError, PathExistsError, PathNotFoundError, TransientError, fail
from aftd.vfs.ftp_client import CONNECTION_ERRORS, PassiveAddressError
from aftd.vfs.ftp_list import UnparsedLine

__all__ = ["ftp_error"]


def ftp_error(vfs: str, rel: str, exc: BaseException) -> TransferError:
    """What a script sees for what the server or the connection did."""
    if isinstance(exc, TransferError):
        return exc
    if isinstance(exc, ops.RootMissing):
        return fail(PathNotFoundError, vfs, rel, f"the VFS root {exc} does not exist")
    if isinstance(exc, ops.NotFound):
        return fail(PathNotFoundError, vfs, rel, "no such file or directory")
    if isinstance(exc, ops.TargetExists):
        return fail(PathExistsError, vfs, rel, "target exists")
    if isinstance(exc, ops.Refused | PassiveAddressError | UnparsedLine):
        return fail(TransferError, vfs, rel, str(exc))
    if isinstance(exc, ftplib.error_temp):
        cls = TransferError if str(exc)[:3] in ("452", "552") else TransientError
        return fail(cls, vfs, rel, f"the server answered {exc}")
    if isinstance(exc, ftplib.error_perm):
        hint = ("; the server requires TLS session reuse on data connections"
                if str(exc).startswith("522") else "")
        return fail(TransferError, vfs, rel, f"the server refused: {exc}{hint}")
    if isinstance(exc, CONNECTION_ERRORS):
        reason = str(exc) or type(exc).__name__
        return fail(TransientError, vfs, rel, f"connection lost: {reason}")
    if isinstance(exc, ValueError):
        return fail(PathEscapeError, vfs, rel, str(exc))
    return fail(TransferError, vfs, rel, f"{type(exc).__name__}: {exc}")
