"""Streaming FTP transfers: a pool thread moves the bytes, the event loop hands chunks over.

A download's thread fills chunks of ``block_size`` from the data connection and passes them to
the loop, at most ``depth`` waiting; an upload's thread sends what the loop queued, at most
``depth`` chunks ahead. Memory per transfer is therefore about ``depth`` chunks, whatever the
file size. Either side stopping early (an error, a cancel) aborts the data connection so the
thread returns at once, and the control connection is discarded: its state after a cut
transfer is not worth guessing.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from aftd.vfs.ftp_client import CONNECTION_ERRORS, FtpClient
from aftd.vfs.ftp_ops import cut_on_failure, recv_fill
from aftd.vfs.ftp_pool import FtpConn, FtpPool

__all__ = ["DEPTH", "FtpReader", "FtpWriter", "Opener"]

DEPTH = 4  # chunks in flight per transfer
_ROOM_POLL_S = 1.0  # a thread waiting for room checks this often that the loop still runs
Opener = Callable[[FtpClient], Any]  # starts the transfer on the thread, returns the data socket
Translate = Callable[[BaseException], BaseException]
_OPENED = object()


class _Inbox:
    """Chunks from a thread to the event loop; the thread waits while ``depth`` are unread.

    The loop is woken (``call_soon_threadsafe``: a write to its self-pipe and a thread switch)
    only when it waits for a chunk; while it is busy, chunks just queue up."""

    def __init__(self, loop: asyncio.AbstractEventLoop, depth: int) -> None:
        self._loop = loop
        self._room = threading.Semaphore(depth)
        self._lock = threading.Lock()
        self._items: deque[object] = deque()
        self._waiter: asyncio.Future[None] | None = None  # set while the loop waits
        self.closed = False

    def put(self, chunk: bytes) -> bool:
        """(thread) False when the reader has gone away."""
        while not self._room.acquire(timeout=_ROOM_POLL_S):
            if self._loop.is_closed():
                return False
        if self.closed:
            return False
        return self.put_final(chunk)

    def put_final(self, item: object) -> bool:
        """(thread) An item that must not wait for room: the end, an error, a signal."""
        with self._lock:
            self._items.append(item)
            waiter, self._waiter = self._waiter, None
        if waiter is None:
            return not self._loop.is_closed()
        try:
            self._loop.call_soon_threadsafe(_resolve, waiter)
        except RuntimeError:  # the loop is closed
            return False
        return True

    async def get(self) -> object:
        while True:
            with self._lock:
                if self._items:
                    item = self._items.popleft()
                    break
                waiter = self._waiter = self._loop.create_future()
            await waiter
        if isinstance(item, bytes) and item:
            self._room.release()
        return item

    def close(self) -> None:
        self.closed = True
        self._room.release()  # a thread waiting for room wakes and sees the inbox closed


class FtpReader:
    """A :class:`~aftd.vfs.base.ReadStream` over ``RETR`` (after ``REST offset``)."""

    def __init__(self, pool: FtpPool, conn: FtpConn, opener: Opener, block: int,
                 translate: Translate) -> None:
        self.pool, self.conn, self.opener, self.block = pool, conn, opener, block
        self.translate = translate
        self.at_end = False
        self._fut: asyncio.Future[None] | None = None

    @property
    def mtime(self) -> float | None:
        return None  # listings and stat carry it

    async def start(self) -> None:
        """Begin the transfer; raises the server's refusal (the raw error) right here."""
        self.inbox = _Inbox(asyncio.get_running_loop(), DEPTH)
        self._fut = self.pool.executor.submit(self._pump, self.conn.client)
        first = await self.inbox.get()
        if isinstance(first, BaseException):  # refused before any byte moved
            self.at_end = True
            await self.close()
            if isinstance(first, CONNECTION_ERRORS):
                self.conn.broken = True
            raise first

    def _pump(self, c: FtpClient) -> None:
        try:
            data = self.opener(c)
        except BaseException as exc:
            self.inbox.put_final(exc)
            return
        self.inbox.put_final(_OPENED)
        view = memoryview(bytearray(self.block))
        try:
            while True:
                n = recv_fill(data, view)
                if n and not self.inbox.put(bytes(view[:n])):
                    return  # the reader went away; close() aborts the sockets
                if n < self.block:
                    break
            c.end_transfer(data, sent=False)
        except BaseException as exc:
            self.inbox.put_final(exc)
            return
        self.inbox.put_final(b"")

    async def read(self) -> bytes:
        if self.at_end:
            return b""
        item = await self.inbox.get()
        if isinstance(item, BaseException):
            self.conn.broken = True
            raise self.translate(item) from None
        assert isinstance(item, bytes)
        self.at_end = not item
        return item

    async def close(self) -> None:
        """Wait for the thread to leave the connection; cut the transfer if it is not over."""
        if self._fut is None:
            return
        if not self.at_end:
            self.conn.broken = True
            self.inbox.close()
            self.conn.client.abort_sockets()
        await asyncio.wait({self._fut})


class _Abort:
    pass


_ABORT = _Abort()


class FtpWriter:
    """A :class:`~aftd.vfs.base.WriteStream` over ``STOR`` (or ``REST``+``STOR``/``APPE``).

    ``confirmed`` counts the bytes handed to the data connection (progress): FTP acknowledges
    nothing before the transfer's final reply, so a resumed copy asks the server how much it
    kept (:meth:`aftd.vfs.ftp.FtpVfs.resume_offset`) rather than trusting it.
    """

    def __init__(self, pool: FtpPool, conn: FtpConn, opener: Opener, offset: int,
                 tail: Callable[[FtpClient, float | None, int], int], translate: Translate) -> None:
        self.pool, self.conn, self.opener, self.tail = pool, conn, opener, tail
        self.translate = translate
        self._offset = offset
        self._final: int | None = None  # the stored size, once finished
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._queued = 0  # chunks queued (loop)
        # Updated by the thread under the lock; it wakes the loop only when the loop waits.
        self._lock = threading.Lock()
        self._sent_chunks = 0
        self._sent_bytes = 0
        self._waiter: asyncio.Future[None] | None = None
        self._fut: asyncio.Future[int] | None = None

    @property
    def confirmed(self) -> int:
        return self._final if self._final is not None else self._offset + self._sent_bytes

    @property
    def receipt(self) -> object | None:
        return None  # FTP says nothing about what it stored beyond its size

    @property
    def finished(self) -> bool:
        return self._fut is not None and self._fut.done()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._opened: asyncio.Future[None] = loop.create_future()
        self._fut = self.pool.executor.submit(self._pump, self.conn.client)
        self._fut.add_done_callback(lambda _: self._wake())
        both: set[asyncio.Future[Any]] = {self._opened, self._fut}
        await asyncio.wait(both, return_when=asyncio.FIRST_COMPLETED)
        if not self._opened.done():  # refused before any byte moved
            self._opened.cancel()
            exc = self._fut.exception() or ConnectionAbortedError("the upload did not start")
            if isinstance(exc, CONNECTION_ERRORS):
                self.conn.broken = True
            raise exc

    def _pump(self, c: FtpClient) -> int:
        data = self.opener(c)
        self._loop.call_soon_threadsafe(_resolve, self._opened)
        mtime: float | None = None
        sent = 0
        with cut_on_failure(c, data):
            while True:
                item = self._queue.get()
                if isinstance(item, _Abort):
                    raise ConnectionAbortedError("upload aborted")
                if isinstance(item, tuple):
                    mtime = item[1]
                    break
                assert isinstance(item, bytes | bytearray | memoryview)
                data.sendall(item)
                sent += len(item)
                self._sent(len(item))
            c.end_transfer(data, sent=True)
        return self.tail(c, mtime, sent)

    def _sent(self, n: int) -> None:
        """(thread) A chunk went out."""
        with self._lock:
            self._sent_chunks += 1
            self._sent_bytes += n
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            with suppress(RuntimeError):  # the loop is closed: nobody waits any more
                self._loop.call_soon_threadsafe(_resolve, waiter)

    def _wake(self) -> None:
        """(loop) The thread ended."""
        with self._lock:
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            _resolve(waiter)

    async def _wait_below(self, limit: int) -> None:
        """Until at most ``limit`` queued chunks are still to be sent."""
        assert self._fut is not None
        while True:
            if self._fut.done():
                self._raise_failure()
            with self._lock:
                if self._queued - self._sent_chunks <= limit:
                    return
                waiter = self._waiter = self._loop.create_future()
            await waiter

    def _raise_failure(self) -> None:
        assert self._fut is not None
        exc = self._fut.exception()
        self.conn.broken = True
        if exc is None:
            exc = ConnectionAbortedError("the upload ended before its last byte")
        raise self.translate(exc) from None

    async def write(self, data: bytes) -> None:
        if not data:
            return
        await self._wait_below(DEPTH - 1)
        self._queue.put(data)
        self._queued += 1

    async def flush(self) -> None:
        """Wait until every queued byte went out on the data connection (the server confirms
        them only at the end of the transfer)."""
        await self._wait_below(0)

    async def finish(self, mtime: float | None) -> int:
        await self.flush()
        assert self._fut is not None
        self._queue.put(("end", mtime))
        await asyncio.wait({self._fut})
        if self._fut.exception() is not None:
            self._raise_failure()
        size = self._fut.result()
        self._final = size
        return size

    async def abort(self) -> None:
        if self._fut is None:
            return
        if not self._fut.done():
            self.conn.broken = True
            self._queue.put(_ABORT)
            self.conn.client.abort_sockets()
        await asyncio.wait({self._fut})
        if not self._fut.cancelled():
            self._fut.exception()  # retrieved: no "never retrieved" warning


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
