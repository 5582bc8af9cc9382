"""Pipelined SFTP streams: a reader keeps ``requests_in_flight`` read requests of ``block_size``
bytes outstanding, a writer as many writes, so round trips never idle the link. Requests are at
most 261,120 bytes because OpenSSH's sftp-server refuses larger ones.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable
from contextlib import suppress
from typing import Any, Protocol

import asyncssh

from aftd.vfs.sftp_errors import ERRORS, SftpOwner, translate


class SftpStreams(SftpOwner, Protocol):
    """What the pipelined streams need of the SFTP backend (:class:`aftd.vfs.sftp.SftpVfs`)."""

    @property
    def opts(self) -> dict[str, Any]: ...

    def depth(self, *, writing: bool = False) -> int: ...

__all__ = ["PipelinedReader", "PipelinedWriter", "close_quietly"]


class PipelinedReader:
    """Keeps up to ``requests_in_flight`` reads outstanding, returns them in order.

    Reads stop at the size the file had when opened (bytes appended later are not copied;
    a file that shrank ends early and the copy engine reports it as changed).
    """

    mtime = None  # stat has it

    def __init__(self, vfs: SftpStreams, rel: str, f: asyncssh.SFTPClientFile, offset: int,
                 ) -> None:
        self.vfs, self.rel, self.f, self.size = vfs, rel, f, 0
        self.next_off = self.pos = offset
        self.bs: int = vfs.opts["block_size"]
        self.depth = vfs.depth()
        self.pending: deque[tuple[int, asyncio.Future[Any]]] = deque()

    async def start(self) -> None:
        """Learn the size (fstat) with the first block already asked for: the two go out
        together, so a file of up to one block costs one round trip after the open."""
        self.pending.append((self.bs, asyncio.ensure_future(self.f.read(self.bs, self.pos))))
        self.next_off += self.bs
        try:
            attrs = await self.f.stat()
        except ERRORS as exc:
            raise translate(self.vfs, self.rel, exc) from None
        self.size = attrs.size or 0

    def limit(self, end: int) -> None:
        """Stop at ``end`` (a ranged stream reads its range only, no read-ahead beyond)."""
        self.size = min(self.size, end)

    @property
    def requested(self) -> int:
        """The end of what was asked for so far (read-ahead included)."""
        return self.next_off

    def _fill(self) -> None:
        while len(self.pending) < self.depth and self.next_off < self.size:
            n = min(self.bs, self.size - self.next_off)
            fut = asyncio.ensure_future(self.f.read(n, self.next_off))
            self.pending.append((n, fut))
            self.next_off += n

    async def read(self) -> bytes:
        self._fill()
        if not self.pending or self.pos >= self.size:  # the size seen at open is the snapshot
            await self.cancel()
            return b""
        n, fut = self.pending.popleft()
        data = await self._guard(fut)
        want = min(n, self.size - self.pos)  # the first block was asked for before the size
        if len(data) > want:  # grew since the fstat, or limited to a range: not ours to copy
            data = data[:want]
        elif len(data) != want:  # short read or shrunk file: re-plan from where we are
            await self.cancel()
            self.size = self.pos + len(data) if not data else self.size
            self.next_off = self.pos + len(data)
        self.pos += len(data)
        return data

    async def _guard(self, aw: Awaitable[bytes]) -> bytes:
        try:
            return await aw
        except ERRORS as exc:
            raise translate(self.vfs, self.rel, exc) from None

    async def cancel(self) -> None:
        await _cancel_all(fut for _, fut in self.pending)
        self.pending.clear()


class PipelinedWriter:
    """Keeps up to ``requests_in_flight`` writes outstanding; tracks the acknowledged prefix."""

    receipt = None  # SFTP acknowledges writes, not contents: verify_stored asks the server

    def __init__(self, vfs: SftpStreams, rel: str, f: asyncssh.SFTPClientFile, offset: int) -> None:
        self.vfs, self.rel, self.f = vfs, rel, f
        self.off = self._confirmed = offset
        self.bs: int = vfs.opts["block_size"]
        self.depth = vfs.depth(writing=True)
        self.pending: deque[tuple[int, asyncio.Future[Any]]] = deque()

    @property
    def confirmed(self) -> int:
        return self._confirmed

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        for start in range(0, len(view), self.bs):
            piece = view[start:start + self.bs]
            while len(self.pending) >= self.depth:
                await self._settle_oldest()
            # asyncssh builds the request from any bytes-like object: no copy of the slice here.
            fut = asyncio.ensure_future(self.f.write(piece, self.off))  # type: ignore[type-var]
            self.off += len(piece)
            self.pending.append((self.off, fut))

    async def _settle_oldest(self) -> None:
        end, fut = self.pending[0]
        try:
            await fut
        except ERRORS as exc:
            raise translate(self.vfs, self.rel, exc) from None
        self.pending.popleft()
        self._confirmed = end

    async def flush(self) -> None:
        try:
            while self.pending:
                await self._settle_oldest()
        except BaseException:
            await self.cancel()
            raise

    async def finish(self, mtime: float | None) -> int:
        """Send set-mtime, stat and close right behind the last writes; one round trip for all.

        No waiting for the writes first: the SFTP protocol has a server process requests about
        the same file in the order they arrive (filexfer drafts, "Request Synchronization and
        Reordering"), and they arrive in the order they were sent: asyncssh sends each request
        from its task's first step, and tasks start in the order they were created, the writes'
        first. The stat therefore sees every write; a failed write is raised from here all
        the same (and the caller never publishes the file).
        """
        set_time = self.f.utime((mtime, mtime)) if mtime is not None else asyncio.sleep(0)
        tail = asyncio.gather(set_time, self.f.stat(), self.f.close())
        try:
            await self.flush()
            _, attrs, _ = await tail
        except BaseException as exc:
            tail.cancel()
            with suppress(BaseException):
                await tail
            if isinstance(exc, ERRORS):
                raise translate(self.vfs, self.rel, exc) from None
            raise
        return int(attrs.size or 0)

    async def cancel(self) -> None:
        await _cancel_all(fut for _, fut in self.pending)
        self.pending.clear()


async def close_quietly(f: asyncssh.SFTPClientFile) -> None:
    with suppress(asyncssh.Error, OSError):
        await f.close()


async def _cancel_all(futs: Any) -> None:
    futs = list(futs)
    for fut in futs:
        fut.cancel()
    # Retrieve outcomes so no "exception never retrieved" warning escapes.
    await asyncio.gather(*futs, return_exceptions=True)
