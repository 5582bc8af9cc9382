"""The backend protocol: what every VFS implements, its features record and its errors.

A backend implements a small set of async operations on paths *relative to its root*; optional
capabilities are announced in :class:`Features` (after rclone's ``Fs``/``Features``). Copying is
not a backend concern: :meth:`Vfs.copy_to` hands over to the copy engine in ``aftd.vfs.copy``.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from aftd import progress
from aftd.errors import TransferError

if TYPE_CHECKING:
    from aftd.vfs.copy import CopyResult

__all__ = [
    "Features",
    "FileInfo",
    "Overwrite",
    "PathEscapeError",
    "PathExistsError",
    "PathNotFoundError",
    "ReadStream",
    "SecretResolver",
    "TransientError",
    "UnknownVfsError",
    "Vfs",
    "WriteStream",
    "fail",
]

Overwrite = Literal["never", "always", "if_size_differs", "if_newer"]


class SecretResolver(Protocol):
    """Resolves a secret by name at use time (the secrets chain implements this)."""

    async def get(self, name: str) -> str: ...


class UnknownVfsError(TransferError):
    """A script asked for a VFS name that is not configured."""


class PathNotFoundError(TransferError):
    """The path does not exist."""


class PathExistsError(TransferError):
    """The target exists and the overwrite policy forbids replacing it."""


class PathEscapeError(TransferError):
    """The path would leave the VFS root (``..``, absolute path outside, symlink out)."""


class TransientError(TransferError):
    """A failure worth retrying: the connection dropped, the server went away."""


def fail(cls: type[TransferError], vfs: str, path: str, reason: str) -> TransferError:
    """Build an error whose message names the VFS and the path."""
    return cls(f"vfs {vfs!r}: {path or '/'!r}: {reason}", vfs=vfs, path=path)


@dataclass(frozen=True)
class Features:
    """Optional capabilities; the copy engine consults these instead of type checks."""

    server_side_copy: bool = False
    atomic_rename_overwrite: bool = False  # rename onto an existing file replaces it atomically
    checksums: tuple[str, ...] = ()  # algorithms the backend can compute over a stored file
    resumable_write: bool = False  # open_write(offset=n) keeps bytes [0, n)
    set_mtime: bool = True
    local_path: bool = False  # files are reachable through the OS (enables kernel copy)


@dataclass(frozen=True)
class FileInfo:
    path: str  # relative to the VFS root, "/"-separated, "" is the root
    size: int
    mtime: float
    is_dir: bool
    mode: int = 0

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


class ReadStream(Protocol):
    async def read(self) -> bytes:
        """The next chunk; ``b""`` at end of file."""


class WriteStream(Protocol):
    @property
    def confirmed(self) -> int:
        """Bytes from the start of the file the server has acknowledged, without holes."""

    async def write(self, data: bytes) -> None:
        """Queue ``data`` after what was written before; may return before it is durable."""

    async def flush(self) -> None:
        """Wait until every queued byte is acknowledged (raises the first write error)."""

    async def finish(self, mtime: float | None) -> int:
        """Flush, set the modification time, and return the size the storage now reports.

        One call so a remote backend can pipeline the three instead of paying three round trips.
        """


class Vfs(abc.ABC):
    """One configured filesystem. Cheap to construct; connections are made lazily."""

    features: Features = Features()

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    @abc.abstractmethod
    async def stat(self, path: str) -> FileInfo:
        """Raises :class:`PathNotFoundError` when missing."""

    @abc.abstractmethod
    async def listdir(self, path: str) -> list[FileInfo]:
        """Entries of a directory (no ``.``/``..``), unsorted."""

    @abc.abstractmethod
    def open_read(self, path: str, offset: int = 0) -> AbstractAsyncContextManager[ReadStream]:
        """Stream the file from ``offset`` in chunks."""

    @abc.abstractmethod
    def open_write(self, path: str, offset: int = 0) -> AbstractAsyncContextManager[WriteStream]:
        """Create/truncate the file to ``offset`` bytes and stream from there.

        Leaving the context normally flushes; leaving it by an exception just closes.
        """

    @abc.abstractmethod
    async def makedirs(self, path: str) -> None:
        """Create the directory and its parents; an existing directory is fine."""

    @abc.abstractmethod
    async def remove(self, path: str) -> None:
        """Remove a file or an empty directory."""

    @abc.abstractmethod
    async def rename(self, src: str, dst: str, *, overwrite: bool = False) -> None:
        """Rename within this VFS; with ``overwrite`` an existing ``dst`` file is replaced."""

    async def set_mtime(self, path: str, mtime: float) -> None:  # noqa: B027 - optional
        """Set the modification time (no-op where unsupported)."""

    async def checksum(self, path: str, algo: str) -> str:
        raise fail(TransferError, self.name, path, f"checksum {algo!r} not supported")

    async def exists(self, path: str) -> bool:
        try:
            await self.stat(path)
        except PathNotFoundError:
            return False
        return True

    async def aclose(self) -> None:  # noqa: B027 - backends without resources need nothing
        """Release connections (the pool calls this)."""

    async def copy_to(
        self,
        src_path: str,
        dst_vfs: Vfs,
        dst_dir: str,
        *,
        overwrite: Overwrite = "never",
        verify: Literal["sha256"] | None = None,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        transfers: int = 4,
    ) -> CopyResult:
        """Copy a file or directory tree into ``dst_dir`` of ``dst_vfs`` (``aftd.vfs.copy``)."""
        from aftd.vfs.copy import copy_tree

        try:
            result = await copy_tree(
                self, src_path, dst_vfs, dst_dir, overwrite=overwrite, verify=verify,
                include=include, exclude=exclude, transfers=transfers,
            )
        except TransferError:
            progress.transfer_finished(self.name, dst_vfs.name, 0, 0, ok=False)
            raise
        progress.transfer_finished(self.name, dst_vfs.name, result.files, result.bytes, ok=True)
        return result
