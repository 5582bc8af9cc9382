"""The backend protocol: what every VFS implements, its features record and its errors.

A backend implements a small set of async operations on paths *relative to its root*; optional
capabilities are announced in :class:`Features` (after rclone's ``Fs``/``Features``). Copying is
not a backend concern: the copy engine (:mod:`aftd.vfs.copy`) drives two backends, and the
handle scripts get (:mod:`aftd.vfs.handle`) offers it as ``copy_to``.
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import AsyncIterator, Callable, Hashable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol

from aftd.errors import TransferError

__all__ = [
    "VERIFIED_READ_BACK",
    "VERIFIED_REMOTE_SHA256",
    "VERIFIED_SERVER_SHA256",
    "Features",
    "FileInfo",
    "PathEscapeError",
    "PathExistsError",
    "PathNotFoundError",
    "ReadPin",
    "ReadStream",
    "StreamDigests",
    "TransientError",
    "UnknownVfsError",
    "Vfs",
    "WriteStream",
    "fail",
    "mismatch",
    "read_back_sha256",
]

# How a destination checked what it stored (``CopyResult.verified_by``): it was read back and
# hashed by aftd; a command on the server hashed it (SFTP); the server verified the SHA-256 the
# upload carried (S3 additional checksums). Other backends add their own names.
VERIFIED_READ_BACK = "read-back"
VERIFIED_REMOTE_SHA256 = "remote-sha256"
VERIFIED_SERVER_SHA256 = "server-sha256"

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


def mismatch(vfs: str, path: str, sent: str, stored: str) -> TransferError:
    """The error of a destination that does not hold what was sent."""
    return fail(TransferError, vfs, path, f"sha256 mismatch: sent {sent}, stored {stored}")


@dataclass(frozen=True)
class Features:
    """Optional capabilities; the copy engine consults these instead of type checks."""

    checksums: tuple[str, ...] = ()  # algorithms the backend can compute over a stored file
    resumable_write: bool = False  # open_write(offset=n) keeps bytes [0, n)
    set_mtime: bool = True
    local_path: bool = False  # files are reachable through the OS (enables kernel copy)
    # Writes become visible only when finish() completes (a multipart upload completed, a block
    # list committed, a resumable upload finalised), and leaving open_write by an exception
    # leaves nothing behind. The copy engine then writes under the final name directly instead
    # of a temporary name plus rename, which object stores can only emulate by copying.
    publish_on_finish: bool = False
    # Directories are key prefixes (object stores, as rclone treats them): makedirs succeeds
    # without creating anything and a directory vanishes with its last file.
    virtual_dirs: bool = False
    # Listings carry the modification time the file was stored with. False (object stores list
    # the upload time): stat() and an opened reader's ``mtime`` have the real one.
    list_mtime: bool = True
    # Extra hashlib digests (e.g. "md5") the copy engine computes while streaming into this
    # backend for verify_stored, besides sha256.
    stream_digests: tuple[str, ...] = ()
    # open_write_range: several writers may fill one existing file at offsets at once (the
    # copy engine's parallel ranged streams, see Vfs.parallel_streams).
    ranged_write: bool = False
    # A reader reports the version it reads (ETag, generation) and its mtime, which the other
    # ranges of the same file must then be pinned to (object stores); others open all at once.
    versioned_reads: bool = False
    # read_blocking / write_blocking: the backend moves a file on a thread of its own and
    # hands each large chunk to a blocking sink there, or fills it from a blocking source (the
    # copy engine reads or writes a local file in place), no chunk crossing to the event loop.
    blocking_read: bool = False
    blocking_write: bool = False


def _nothing() -> None:
    pass


@dataclass
class ReadPin:
    """What every range of one download must read: the version, mtime and size the first
    range's answer reported (object stores; see :meth:`Vfs.read_blocking`). A backend calls
    ``learned()`` (from any thread) once its read has begun and the pin holds what it tells,
    so the other ranges can start pinned to it."""

    version: str | None = None
    mtime: float | None = None
    size: int | None = None
    learned: Callable[[], None] = field(default=_nothing, repr=False)


@dataclass(frozen=True)
class FileInfo:
    """A file, directory or link as ``stat``/``listdir`` see it: ``path`` (relative to the VFS
    root, ``/``-separated), ``size`` in bytes, ``mtime`` (seconds since the epoch), ``is_dir``,
    ``mode`` (permission bits), ``is_link`` (listings do not follow links) and ``special``
    (a FIFO, socket or device)."""

    path: str  # relative to the VFS root, "/"-separated, "" is the root
    size: int
    mtime: float
    is_dir: bool
    mode: int = 0
    is_link: bool = False  # a symlink, as listed (listings do not follow links)
    special: bool = False  # neither file, directory nor symlink (FIFO, socket, device)

    @property
    def name(self) -> str:
        """The last component of ``path``."""
        return self.path.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class StreamDigests:
    """What the copy engine computed over the bytes it streamed into a destination: the hex
    ``sha256``, the ``size``, and any ``extra`` hex digests the destination asked for in
    :attr:`Features.stream_digests`."""

    sha256: str
    size: int
    extra: Mapping[str, str] = field(default_factory=dict)


class ReadStream(Protocol):
    """What ``open_read`` yields: the file's bytes in chunks."""

    @property
    def mtime(self) -> float | None:
        """The modification time the open learnt (object stores return their metadata with
        the bytes); ``None`` where stat/listings already have it."""

    async def read(self) -> bytes:
        """The next chunk; ``b""`` at end of file."""


class WriteStream(Protocol):
    """What ``open_write`` yields: writes are pipelined; ``finish`` makes them durable."""

    @property
    def confirmed(self) -> int:
        """Bytes from the start of the file the server has acknowledged, without holes."""

    @property
    def receipt(self) -> object | None:
        """What the server said about the stored file once ``finish`` returned (checksums it
        verified or computed), for the backend's :meth:`Vfs.verify_stored`; ``None``: nothing."""

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

    async def scandir(self, path: str) -> AsyncIterator[FileInfo]:
        """The entries of :meth:`listdir`, one at a time: a backend that can stream a listing
        overrides this, so walking a huge directory holds a page of it, not all of it."""
        for info in await self.listdir(path):
            yield info

    @abc.abstractmethod
    def open_read(self, path: str, offset: int = 0) -> AbstractAsyncContextManager[ReadStream]:
        """Stream the file from ``offset`` in chunks."""

    @abc.abstractmethod
    def open_write(self, path: str, offset: int = 0, *, mtime: float | None = None,
                   size: int | None = None, verify: bool = False,
                   ) -> AbstractAsyncContextManager[WriteStream]:
        """Create/truncate the file to ``offset`` bytes and stream from there.

        Hints from a caller that knows them up front (the copy engine does): ``mtime``, the
        modification time the finished file will carry (backends that publish on finish store
        it with the object when the upload starts, as object metadata cannot change later; the
        others set what ``finish`` gets); ``size``, the final size (an upload can choose its
        part size, or plan parallel parts); ``verify``, :meth:`verify_stored` will be asked
        afterwards (an upload can have the server check checksums it sends). Leaving the
        context normally flushes; leaving it by an exception just closes (and a
        :attr:`Features.publish_on_finish` backend aborts the upload: nothing is left).
        """

    @asynccontextmanager
    async def open_read_range(self, path: str, start: int, end: int | None, *,
                              version: str | None = None) -> AsyncIterator[ReadStream]:
        """Bytes ``[start, end)`` of ``path``: one range of a file moved as several (the copy
        engine's parallel ranged streams). ``version`` is what a reader of another range of
        the same file reported as its ``version``: a backend that can tell versions apart
        (object stores: ETag, generation) refuses to read another one. The default reads
        from ``start`` and stops at ``end`` where the reader can be told to (``limit``)."""
        async with self.open_read(path, start) as r:
            limit = getattr(r, "limit", None)
            if callable(limit) and end is not None:
                limit(end)
            yield r

    def open_write_range(self, path: str, offset: int) -> AbstractAsyncContextManager[WriteStream]:
        """Write into the existing file ``path`` from ``offset`` without truncating it (only
        with :attr:`Features.ranged_write`); ``finish`` flushes and returns the end offset."""
        raise NotImplementedError(f"{type(self).__name__} has no ranged writes")

    async def parallel_streams(self, size: int) -> int:
        """How many ranged streams a file of ``size`` bytes should move as (1: one stream)."""
        return 1

    def files_in_flight_cap(self) -> int | None:
        """How many files a tree copy with ``transfers="auto"`` may grow to on this backend
        (``max_files_in_flight``); ``None``: no say (such a copy then keeps to 4 files)."""
        return None

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

    async def verify_stored(self, path: str, expected: StreamDigests,
                            receipt: object | None) -> str:
        """Check that what this backend stored under ``path`` is what was streamed into it.

        ``receipt`` is the writer's :attr:`WriteStream.receipt`. Returns how the check was made
        (``VERIFIED_*``), raises :class:`TransferError` naming both digests on a mismatch. The
        default reads the file back and hashes it; backends override it with what the server
        can do itself (a remote hash command, checksums the server verified on upload).
        """
        got = await read_back_sha256(self, path)
        if got != expected.sha256:
            raise mismatch(self.name, path, expected.sha256, got)
        return VERIFIED_READ_BACK

    async def copy_from(self, src: Vfs, src_path: str, dst_path: str, *,
                        mtime: float | None) -> int | None:
        """Copy ``src_path`` of ``src`` to ``dst_path`` here without the bytes passing through
        aftd (the same backend and account: S3 CopyObject, Azure copy from URL, GCS rewrite).

        Returns the size stored, or ``None`` when this backend cannot copy from ``src`` server
        side (the copy engine then streams). The result is published like a finished write.
        """
        return None

    async def blocking_streams(self, size: int) -> int:
        """How many ranges a download of a ``size``-byte file to local disk moves as through
        :meth:`read_blocking`, at once (0: none, the copy engine streams it)."""
        return 1 if self.features.blocking_read else 0

    async def read_blocking(self, path: str, offset: int,
                            sink: Callable[[int, memoryview], None], *, end: int | None = None,
                            pin: ReadPin | None = None) -> int:
        """Read ``path`` from ``offset`` to ``end`` (None: its end) on a thread of the
        backend's, calling ``sink(position, chunk)`` there for each chunk in order (``chunk``
        is only valid during the call). Returns the position after the last byte. ``pin`` is
        shared by the ranges of one download: a backend that tells versions apart fills it
        from its first answer and refuses another version later. Only where
        :meth:`blocking_streams` says so; a TransferError the sink raises comes out
        unchanged, and a cancel waits until the thread has left the sink."""
        raise NotImplementedError(f"{type(self).__name__} has no blocking reads")

    async def write_blocking(self, path: str, offset: int,
                             source: Callable[[int, memoryview], int], *,
                             mtime: float | None) -> int:
        """Write ``path`` from ``offset`` (as ``open_write`` would, then finish it with
        ``mtime``) on the backend's own thread, where ``source(position, buffer)`` fills the
        start of ``buffer`` with the bytes at ``position`` and returns how many (0: the end).
        Returns the size stored. Only where ``features.blocking_write``; a TransferError the
        source raises comes out unchanged, and a cancel waits until the thread has left it."""
        raise NotImplementedError(f"{type(self).__name__} has no blocking writes")

    async def resume_offset(self, path: str, confirmed: int) -> int:
        """Where a copy into ``path`` that was cut off continues, given the writer's last
        ``confirmed``. A backend whose writer cannot know what the server kept (FTP confirms a
        transfer only at its end) asks the server; the default trusts ``confirmed``."""
        return confirmed

    async def follow_link(self, path: str) -> FileInfo:
        """What the symlink ``path`` points to, under the link's own path.

        Raises :class:`PathEscapeError` when the target lies outside the root and
        :class:`PathNotFoundError` when it does not exist (a dangling link).
        """
        return await self.stat(path)

    async def identity(self, path: str) -> Hashable:
        """What makes the directory ``path`` itself (device and inode, or a canonical path):
        a tree walk that follows symlinks uses it to notice a link back to an ancestor."""
        return (await self.stat(path)).path

    async def exists(self, path: str) -> bool:
        try:
            await self.stat(path)
        except PathNotFoundError:
            return False
        return True

    async def aclose(self) -> None:  # noqa: B027 - backends without resources need nothing
        """Release connections (the pool calls this)."""


async def read_back_sha256(vfs: Vfs, path: str) -> str:
    """The SHA-256 of a stored file, read through the backend (a read-back verification)."""
    h = hashlib.sha256()
    async with vfs.open_read(path) as r:
        while data := await r.read():
            h.update(data)
    return h.hexdigest()
