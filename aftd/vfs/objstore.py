"""The filesystem view every object-store backend (S3, Azure Blob, GCS) gives, built on four
primitives each backend implements: head, list (by delimiter), delete and server-side copy.

Directories behave as rclone's do on object stores: a directory is the common prefix of the keys
under it, listed with the ``/`` delimiter; ``makedirs`` succeeds without creating anything and a
directory vanishes with its last file. A zero-byte key ending in ``/`` (the "folder" other tools
create) counts as a directory and is never listed as a file. Keys that cannot be addressed
through the VFS (see :mod:`aftd.vfs.objkeys`) are left out of listings and logged.

Writes publish on completion (``Features.publish_on_finish``): the copy engine writes under the
final name and the backend's writer aborts an unfinished upload. ``rename`` is a server-side copy
plus a delete, as on every object store; ``set_mtime`` copies the object onto itself with new
metadata (what rclone does).

Reads are the same on every object store (:mod:`aftd.vfs.objread`): ranged GETs that resume
where they broke, pinned to one version of the object. A large file read into a destination
that can write at offsets (local, SFTP) moves as ``streams`` ranges at once (for files of at
least ``streams_min_size``), as rclone's multi-thread downloads do; each range resumes by
itself, and every range is pinned to the version the first one saw.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol, TypeVar

import structlog

from aftd.errors import TransferError
from aftd.vfs.base import (
    Features,
    FileInfo,
    PathExistsError,
    PathNotFoundError,
    ReadPin,
    ReadStream,
    TransientError,
    Vfs,
    WriteStream,
    fail,
)
from aftd.vfs.objget import CONNECTION_ERRORS, HttpGet, read_range, via_proxy
from aftd.vfs.objkeys import ObjectKeys
from aftd.vfs.objread import RESUME_DELAYS, ObjectChanged, ObjectReader, RangeResponse

__all__ = ["BLOCKING_MIN_SIZE", "OBJECT_STORE_FEATURES", "ObjectEntry", "ObjectStoreVfs", "Upload",
           "publish_on_exit"]

log = structlog.get_logger(__name__)

# Objects at least this large download to local disk on threads (aftd.vfs.objget); smaller
# ones stream on the pooled connections (a tree of small files would otherwise open a
# connection per file).
BLOCKING_MIN_SIZE = 16 << 20
OBJECT_STORE_FEATURES = Features(publish_on_finish=True, virtual_dirs=True, list_mtime=False,
                                 versioned_reads=True)


class Upload(WriteStream, Protocol):
    """An object-store writer: nothing exists under the name until ``finish``."""

    async def abort(self) -> None:
        """Drop the unfinished upload."""


U = TypeVar("U", bound=Upload)


@dataclass(frozen=True)
class ObjectEntry:
    """An object as a head or a listing returns it; ``mtime`` is the stored modification time
    where the response carries metadata (head), else the last-modified time (listings)."""

    key: str
    size: int
    mtime: float


class ObjectStoreVfs(Vfs):
    """Base of the object-store backends: paths, directories, remove, rename, set_mtime.

    Primitives raise :class:`TransferError` subclasses themselves (naming the VFS and the
    path: ``self.keys.rel_of``-style translation is the backend's), and a missing object is
    ``None`` from :meth:`head_object`, never an error.
    """

    features = OBJECT_STORE_FEATURES
    kind = "objstore"  # the backend type, in log event names
    # Errors of a response body's read worth another GET (besides TransientError).
    read_errors: tuple[type[BaseException], ...] = ()
    object_noun = "an object"  # what the store calls one, in messages
    # blocking_get is implemented: large downloads to local disk run on threads.
    blocking_gets = False

    def __init__(self, name: str, prefix: str, *, streams: int = 1,
                 streams_min_size: int = 64 << 20) -> None:
        super().__init__(name)
        self.keys = ObjectKeys(name, prefix)
        self.streams, self.streams_min_size = streams, streams_min_size

    # -- primitives ------------------------------------------------------------------------
    @abc.abstractmethod
    async def head_object(self, key: str) -> ObjectEntry | None:
        """The object ``key`` with its stored mtime, or None when there is none."""

    @abc.abstractmethod
    def list_objects(self, prefix: str, *, limit: int | None = None,
                     ) -> AsyncIterator[ObjectEntry | str]:
        """Objects under ``prefix`` one level deep (delimiter ``/``): entries, and the common
        prefixes below as strings ending in ``/``; stops after ``limit`` items. An unknown
        bucket or container raises an error naming it."""

    @abc.abstractmethod
    async def delete_object(self, key: str) -> None:
        """Delete ``key`` (a missing key is not an error)."""

    @abc.abstractmethod
    async def copy_object(self, src_key: str, dst_key: str, *, mtime: float | None) -> int:
        """Server-side copy within this VFS's bucket; ``mtime`` replaces the stored one, None
        keeps the source's metadata. Returns the size of the copy."""

    @abc.abstractmethod
    async def get_range(self, rel: str, key: str, start: int, end: int | None,
                        version: str | None) -> RangeResponse:
        """One ranged GET (see :class:`~aftd.vfs.objread.RangeSource`)."""

    # -- reads -----------------------------------------------------------------------------
    @asynccontextmanager
    async def open_read(self, path: str, offset: int = 0) -> AsyncIterator[ReadStream]:
        async with self.open_read_range(path, offset, None) as reader:
            yield reader

    @asynccontextmanager
    async def open_read_range(self, path: str, start: int, end: int | None, *,
                              version: str | None = None) -> AsyncIterator[ReadStream]:
        """Bytes ``[start, end)`` in ranged GETs that ask for no more than that, pinned to
        ``version`` when given (the reader's ``version`` is what it read)."""
        rel = self.rel(path)
        reader = ObjectReader(self, rel, self.keys.key(rel), start, end, version)
        try:
            await reader.open()
            yield reader
        finally:
            await reader.close()

    def new_object(self, path: str, offset: int) -> str:
        """The relative path of an object about to be written: not the root, and written from
        offset 0 (an object cannot be appended to)."""
        rel = self.rel(path)
        if not rel:
            raise fail(TransferError, self.name, rel, "cannot write to the root")
        if offset:
            raise fail(TransferError, self.name, rel,
                       f"{self.object_noun} cannot be appended to (write from offset 0)")
        return rel

    async def parallel_streams(self, size: int) -> int:
        """``streams`` ranges at once for a file of at least ``streams_min_size`` bytes."""
        return self.streams if size >= self.streams_min_size else 1

    # -- blocking ranged reads (large downloads to local disk) -----------------------------
    async def blocking_get(self, rel: str, key: str, start: int, end: int | None,
                           version: str | None) -> HttpGet:
        """The GET of bytes ``[start, end)`` of ``key`` (``end`` None: to its end) on
        condition of ``version`` when given, ready to send from a thread (signed, or with a
        token); only where :attr:`blocking_gets`."""
        raise NotImplementedError(f"{type(self).__name__} has no blocking GETs")

    def service_url(self) -> str | None:
        """The URL the backend's requests go to when it honours proxy settings from the
        environment (None: it does not)."""
        return None

    async def blocking_streams(self, size: int) -> int:
        """An object of at least :data:`BLOCKING_MIN_SIZE` downloads to local disk on threads,
        as :meth:`parallel_streams` ranges, unless the backend's requests go through a proxy
        (these GETs do not)."""
        if not self.blocking_gets or size < BLOCKING_MIN_SIZE:
            return 0
        url = self.service_url()
        if url is not None and via_proxy(url):
            return 0
        return await self.parallel_streams(size)

    async def read_blocking(self, path: str, offset: int,
                            sink: Callable[[int, memoryview], None], *, end: int | None = None,
                            pin: ReadPin | None = None) -> int:
        """Ranged GETs on a thread (:mod:`aftd.vfs.objget`); one that breaks is asked again
        for the rest, pinned to the version read so far, as the streaming reads are."""
        rel = self.rel(path)
        key = self.keys.key(rel)
        pin = pin if pin is not None else ReadPin()
        pos = offset

        def track(at: int, chunk: memoryview) -> None:
            nonlocal pos
            sink(at, chunk)
            pos = at + len(chunk)

        for delay in (*RESUME_DELAYS, None):
            get = await self.blocking_get(rel, key, pos, end, pin.version)
            try:
                return await read_range(get, pos, 1 << 62 if end is None else end, track, pin,
                                        lambda why: fail(ObjectChanged, self.name, rel, why))
            except (*CONNECTION_ERRORS, TransientError) as exc:
                why = str(exc) or type(exc).__name__
                if delay is None:
                    raise fail(TransientError, self.name, rel,
                               f"reading failed at byte {pos}: {why}") from None
                log.warning(f"{self.kind}_read_resume", vfs=self.name, path=rel, at=pos,
                            error=why, delay_s=delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    # -- the filesystem view ---------------------------------------------------------------
    def rel(self, path: str) -> str:
        return self.keys.rel(path)

    async def stat(self, path: str) -> FileInfo:
        rel = self.rel(path)
        if not rel:
            await self._first(self.keys.dir_prefix(""))  # an unknown bucket fails here
            return FileInfo("", 0, 0.0, True)
        entry = await self.head_object(self.keys.key(rel))
        if entry is not None:
            return FileInfo(rel, entry.size, entry.mtime, False)
        if await self._first(self.keys.dir_prefix(rel)) is not None:
            return FileInfo(rel, 0, 0.0, True)
        raise fail(PathNotFoundError, self.name, rel, "no such file or directory")

    async def listdir(self, path: str) -> list[FileInfo]:
        return [info async for info in self.scandir(path)]

    async def scandir(self, path: str) -> AsyncIterator[FileInfo]:
        """The listing as the server pages it (1,000 keys at a time on S3): a walk of a huge
        prefix holds one page, not the whole of it."""
        rel = self.rel(path)
        prefix = self.keys.dir_prefix(rel)
        found = marker = False
        async for item in self.list_objects(prefix):
            key = item if isinstance(item, str) else item.key
            if key == prefix:
                marker = True  # the directory's own "folder" object
                continue
            info = self._entry(rel, prefix, key, item)
            if info is not None:
                found = True
                yield info
        if not found and not marker and rel:
            if await self.head_object(self.keys.key(rel)) is not None:
                raise fail(TransferError, self.name, rel, "not a directory")
            raise fail(PathNotFoundError, self.name, rel, "no such file or directory")

    def _entry(self, rel: str, prefix: str, key: str, item: ObjectEntry | str,
               ) -> FileInfo | None:
        child = self.keys.child(rel, key, prefix)
        if child is None:
            log.warning("objstore_key_skipped", vfs=self.name, key=key,
                        reason="cannot be addressed as a path of this VFS")
            return None
        if isinstance(item, str) or key.endswith("/"):
            return FileInfo(child, 0, 0.0, True)
        return FileInfo(child, item.size, item.mtime, False)

    async def makedirs(self, path: str) -> None:
        """Nothing to create: a directory exists while a key lies under it."""
        self.rel(path)

    async def remove(self, path: str) -> None:
        rel = self.rel(path)
        if not rel:
            raise fail(TransferError, self.name, rel, "cannot remove the root")
        key = self.keys.key(rel)
        if await self.head_object(key) is not None:
            await self.delete_object(key)
            return
        prefix = self.keys.dir_prefix(rel)
        inside = [k async for k in self._keys(prefix, limit=2)]
        if any(k != prefix for k in inside):
            raise fail(TransferError, self.name, rel, "directory not empty")
        if not inside:
            raise fail(PathNotFoundError, self.name, rel, "no such file or directory")
        await self.delete_object(prefix)  # only its "folder" object was left

    async def rename(self, src: str, dst: str, *, overwrite: bool = False) -> None:
        srel, drel = self.rel(src), self.rel(dst)
        skey, dkey = self.keys.key(srel), self.keys.key(drel)
        if await self.head_object(skey) is None:
            if srel and await self._first(self.keys.dir_prefix(srel)) is not None:
                raise fail(TransferError, self.name, srel,
                           "renaming a directory is not supported on an object store")
            raise fail(PathNotFoundError, self.name, srel, "no such file or directory")
        if srel == drel:
            return
        if not overwrite and await self.head_object(dkey) is not None:
            raise fail(PathExistsError, self.name, drel, "target exists")
        await self.copy_object(skey, dkey, mtime=None)
        await self.delete_object(skey)

    async def set_mtime(self, path: str, mtime: float) -> None:
        rel = self.rel(path)
        key = self.keys.key(rel)
        if await self.head_object(key) is None:
            raise fail(PathNotFoundError, self.name, rel, "no such file or directory")
        await self.copy_object(key, key, mtime=mtime)

    async def _first(self, prefix: str) -> ObjectEntry | str | None:
        async for item in self.list_objects(prefix, limit=1):
            return item
        return None

    async def _keys(self, prefix: str, limit: int) -> AsyncIterator[str]:
        async for item in self.list_objects(prefix, limit=limit):
            yield item if isinstance(item, str) else item.key


@asynccontextmanager
async def publish_on_exit(writer: U) -> AsyncIterator[U]:
    """Leaving the block normally publishes the upload (unless the caller finished it, with its
    own mtime); leaving it by an exception aborts the upload."""
    try:
        yield writer
        if writer.receipt is None:
            await writer.finish(None)
    except BaseException:
        await writer.abort()
        raise
