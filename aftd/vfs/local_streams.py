"""Streams of the ``local`` backend: a reader of the size seen at open, a writer that gathers
small chunks into one ``pwritev``. Blocking calls run on the ``file_io`` executor."""

from __future__ import annotations

import os
from typing import Protocol

from aftd import executors
from aftd.vfs.local_errors import os_error

__all__ = ["LocalReader", "LocalWriter"]


class _Owner(Protocol):
    """What the streams need of the local backend (:class:`aftd.vfs.local.LocalVfs`); a
    protocol, so that this module need not import the backend."""

    @property
    def name(self) -> str: ...

    @property
    def chunk_size(self) -> int: ...


class LocalReader:
    """Reads up to the size seen at open (the snapshot we copy), like the SFTP reader."""

    mtime = None  # stat has it

    def __init__(self, vfs: _Owner, rel: str, fd: int, offset: int, size: int) -> None:
        self.vfs, self.rel, self.fd, self.offset, self.size = vfs, rel, fd, offset, size

    def limit(self, end: int) -> None:
        """Stop at ``end`` (a ranged stream reads its range only)."""
        self.size = min(self.size, end)

    async def read(self) -> bytes:
        want = min(self.vfs.chunk_size, self.size - self.offset)
        if want <= 0:
            return b""  # no thread hop just to learn about end of file
        try:
            data = await executors.run(executors.FILE_IO, os.pread, self.fd, want, self.offset)
        except OSError as exc:
            raise os_error(self.vfs.name, self.rel, exc) from None
        self.offset += len(data)
        return data


class LocalWriter:
    """Gathers small chunks (an SFTP reader yields ~255 KiB) into one pwritev per chunk_size,
    so a download pays one thread hand-off per MiB rather than four, without copying."""

    receipt = None  # verify_stored reads the file back

    def __init__(self, vfs: _Owner, rel: str, fd: int, offset: int) -> None:
        self.vfs, self.rel, self.fd, self.offset = vfs, rel, fd, offset
        self.pending: list[bytes] = []
        self.pending_len = 0

    @property
    def confirmed(self) -> int:
        return self.offset

    async def write(self, data: bytes) -> None:
        self.pending.append(data)
        self.pending_len += len(data)
        if self.pending_len >= self.vfs.chunk_size:
            await self.flush()

    async def flush(self) -> None:
        if not self.pending:
            return
        bufs, n = self.pending, self.pending_len
        self.pending, self.pending_len = [], 0
        try:
            await executors.run(executors.FILE_IO, _pwritev_all, self.fd, bufs, self.offset)
        except OSError as exc:
            raise os_error(self.vfs.name, self.rel, exc) from None
        self.offset += n

    async def finish(self, mtime: float | None) -> int:
        """The last bytes, the mtime and the size in one thread hand-off (a small file's
        whole write, in a tree of thousands)."""
        bufs, n = self.pending, self.pending_len
        self.pending, self.pending_len = [], 0

        def op() -> int:
            if bufs:
                _pwritev_all(self.fd, bufs, self.offset)
            if mtime is not None:
                os.utime(self.fd, (mtime, mtime))
            return os.fstat(self.fd).st_size

        try:
            size = await executors.run(executors.FILE_IO, op)
        except OSError as exc:
            raise os_error(self.vfs.name, self.rel, exc) from None
        self.offset += n
        return size


def _pwritev_all(fd: int, bufs: list[bytes], offset: int) -> None:
    views = [memoryview(b) for b in bufs if b]
    while views:
        n = os.pwritev(fd, views, offset)
        offset += n
        while views and n >= len(views[0]):  # drop what was written, keep a partial remainder
            n -= len(views[0])
            views.pop(0)
        if views and n:
            views[0] = views[0][n:]
