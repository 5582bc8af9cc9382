"""One file between a local disk and a backend that moves bytes on threads of its own (FTP's
connections; the object stores' ranged GETs, :mod:`aftd.vfs.objget`): each chunk is received
into (or read from disk into) one reused buffer and written in place there (``pwrite``, or
sent), so no chunk is copied into a new object, crosses to the event loop, or waits for a file
thread. The per-chunk hand-overs of the streaming path cost about as much CPU as the TLS
transfer itself (README: "FTP and FTPS"), and more than twice what these GETs cost (README:
"Parallel ranged downloads").

A large download moves as several ranges at once (``streams``), each written at its offset
into the one temporary file; the first range learns the version of the object the others must
read (:class:`~aftd.vfs.base.ReadPin`). Same contract as a streamed copy: local files are
opened through the local VFS's confinement (a new temporary file exclusively), a transient
failure resumes (a range at the last byte it wrote, an upload where the server's copy ends), a
cancel waits until the threads have left the local file (the caller then removes the
temporary file), and the size is checked. A verified download is one range, hashed in order
on its thread; FTP's stream instead (see :func:`download_streams`).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import structlog

from aftd import executors
from aftd.errors import TransferError
from aftd.vfs.base import FileInfo, ReadPin, TransientError, Vfs, fail
from aftd.vfs.copy_ranges import split

if TYPE_CHECKING:
    from aftd.vfs.local import LocalVfs

__all__ = ["REPORT_BYTES", "direct_download", "direct_upload", "download_streams",
           "wants_direct_upload"]

log = structlog.get_logger(__name__)
REPORT_BYTES = 8 << 20  # progress reaches the loop at most once per this many bytes
_REPORT_S = 0.5  # ... or per this long


async def download_streams(src: Vfs, dst: Vfs, size: int, verify: str | None) -> int:
    """How many ranges a download of ``size`` bytes to a local file moves as on the source's
    threads (:meth:`~aftd.vfs.base.Vfs.blocking_streams`; 0: it streams). A verified one is
    hashed in order, so it is one range; FTP's then streams (the loop's thread hashes while
    the connection's thread receives the next chunk, where one thread would do both in turn),
    an object store's does not (its streaming reads cost more than the hashing)."""
    if not dst.features.local_path or (verify and src.features.blocking_read):
        return 0
    streams = await src.blocking_streams(size)
    return min(streams, 1) if verify else streams


def wants_direct_upload(src: Vfs, dst: Vfs, verify: str | None) -> bool:
    """An upload from a local file to a backend with blocking writes, without ``verify``."""
    return not verify and src.features.local_path and dst.features.blocking_write


class _Reporter:
    """Progress from a backend's thread to the loop, at most every REPORT_BYTES or
    _REPORT_S."""

    def __init__(self, progress: Callable[[int], None]) -> None:
        self.loop = asyncio.get_running_loop()
        self.progress = progress
        self._reported, self._at = 0, time.monotonic()

    def __call__(self, pos: int) -> None:
        now = time.monotonic()
        if pos - self._reported >= REPORT_BYTES or now - self._at >= _REPORT_S:
            self._reported, self._at = pos, now
            with suppress(RuntimeError):  # the loop is closing: nobody follows progress
                self.loop.call_soon_threadsafe(self.progress, pos)


class _Sink:
    """Runs on the backend's thread: writes one range's chunks in place, and now and then
    reports the progress of all ranges."""

    def __init__(self, fd: int, report: Callable[[int], None], dst: str, path: str,
                 start: int, done: Callable[[], int],
                 digest: Callable[[memoryview], None] | None) -> None:
        self.fd, self.report, self.done, self.digest = fd, report, done, digest
        self.dst, self.path = dst, path
        self.start = self.written = start  # bytes [start, written) are in the file

    def __call__(self, pos: int, chunk: memoryview) -> None:
        try:
            _pwrite_all(self.fd, chunk, pos)
        except OSError as exc:  # a local failure, not the connection's: not retried
            raise fail(TransferError, self.dst, self.path,
                       exc.strerror or type(exc).__name__) from None
        if self.digest is not None:  # in order: a verified download is one range
            self.digest(chunk)
        self.written = pos + len(chunk)
        self.report(self.done())


async def direct_download(src: Vfs, info: FileInfo, dst: LocalVfs, target: str, dst_path: str,
                          *, streams: int, mtime: float | None,
                          progress: Callable[[int], None], retry_delays: tuple[float, ...],
                          digest: Callable[[memoryview], None] | None = None,
                          ) -> tuple[int, float | None]:
    """Copy ``info`` of ``src`` into the new local file ``target`` as ``streams`` ranges at
    once (one with ``digest``, which sees every byte in order); returns its size and the
    mtime it was given (the source's stored one where its reads report it, else ``mtime``)."""
    fd = await _create(dst, target)
    ranges = split(info.size, streams) if streams > 1 else [(0, info.size)]
    report = _Reporter(progress)
    sinks: list[_Sink] = []

    def done() -> int:
        return sum(s.written - s.start for s in sinks)

    assert digest is None or len(ranges) == 1
    sinks.extend(_Sink(fd, report, dst.name, dst_path, a, done, digest) for a, _ in ranges)
    pinned = asyncio.Event()
    loop = asyncio.get_running_loop()

    def learned() -> None:
        loop.call_soon_threadsafe(pinned.set)

    pin = ReadPin(learned=learned)
    try:
        last = len(ranges) - 1
        ends = await _ranges(src, info, sinks, [b if i < last else None
                                                for i, (_, b) in enumerate(ranges)],
                             pin, pinned, dst.name, dst_path, retry_delays)
        got = pin.size if pin.size is not None else ends[-1]
        if ends[-1] != info.size or got != info.size:
            raise fail(TransferError, src.name, info.path, "source changed during the copy: "
                       f"read {max(ends[-1], got)} bytes, expected {info.size}")
        if mtime is not None and pin.mtime is not None:  # the stored one, where reads tell it
            mtime = pin.mtime
        size = await executors.run(executors.FILE_IO, _finish, fd, mtime)
    except OSError as exc:
        raise fail(TransferError, dst.name, dst_path, exc.strerror or str(exc)) from None
    finally:
        os.close(fd)  # the threads have left the sinks (read_blocking waits for them on cancel)
    if len(ranges) > 1:
        log.info("copy_ranged", vfs=dst.name, path=dst_path, streams=len(ranges), bytes=size)
    progress(size)
    return size, mtime


async def _ranges(src: Vfs, info: FileInfo, sinks: list[_Sink], ends: list[int | None],
                  pin: ReadPin, pinned: asyncio.Event, dst: str, dst_path: str,
                  retry_delays: tuple[float, ...]) -> list[int]:
    """Every range at once, the others once the first has learned the version they must read
    (``pinned``); any failure or cancel stops the others and waits for them."""

    async def one(i: int, sink: _Sink, end: int | None) -> int:
        if i:
            await pinned.wait()
        return await _fetch(src, info, sink, end, pin, dst, dst_path, retry_delays)

    tasks = [asyncio.ensure_future(one(i, sink, end))
             for i, (sink, end) in enumerate(zip(sinks, ends, strict=True))]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


class _Source:
    """Runs on the backend's thread: reads the local file at a position, reports."""

    def __init__(self, fd: int, report: Callable[[int], None], src: str, path: str) -> None:
        self.fd, self.report = fd, report
        self.src, self.path = src, path
        self.read = 0  # bytes [0, read) were read at least once

    def __call__(self, pos: int, buf: memoryview) -> int:
        try:
            n = os.preadv(self.fd, [buf], pos)
        except OSError as exc:  # a local failure, not the connection's: not retried
            raise fail(TransferError, self.src, self.path,
                       exc.strerror or type(exc).__name__) from None
        self.read = max(self.read, pos + n)
        self.report(pos + n)
        return n


async def direct_upload(src: LocalVfs, info: FileInfo, dst: Vfs, target: str, dst_path: str,
                        *, mtime: float | None, progress: Callable[[int], None],
                        retry_delays: tuple[float, ...]) -> int:
    """Copy the local file ``info`` into ``target`` of ``dst``; returns the size it stored."""
    fd, _ = await _open_source(src, info.path)
    source = _Source(fd, _Reporter(progress), src.name, info.path)
    try:
        size = await _send(dst, target, dst_path, mtime, source, retry_delays)
    finally:
        os.close(fd)  # the thread has left the source: write_blocking waits for it
    if source.read != info.size:
        raise fail(TransferError, src.name, info.path, f"source changed during the copy: read "
                   f"{source.read} bytes, expected {info.size}")
    progress(size)
    return size


async def _send(dst: Vfs, target: str, dst_path: str, mtime: float | None, source: _Source,
                retry_delays: tuple[float, ...]) -> int:
    offset = 0
    resume = False
    for delay in (*retry_delays, None):
        try:
            if resume:  # what the server kept (FTP confirms nothing before the end)
                offset = await dst.resume_offset(target, offset)
                log.info("copy_resumed", vfs=dst.name, path=dst_path, offset=offset)
            return await dst.write_blocking(target, offset, source, mtime=mtime)
        except TransientError as exc:
            if delay is None:
                raise
            offset, resume = source.read, True
            log.warning("copy_retry", vfs=dst.name, path=dst_path, error=str(exc),
                        resume_at=offset, delay_s=delay)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


async def _open_source(src: LocalVfs, path: str) -> tuple[int, int]:
    fut = executors.get(executors.FILE_IO).submit(src.reader_fd, path)
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        fut.add_done_callback(_close_opened)
        raise


async def _create(dst: LocalVfs, target: str) -> int:
    """The temporary file, opened through the local VFS's confinement on a file thread (a
    cancel while it opens still closes the descriptor)."""
    fut = executors.get(executors.FILE_IO).submit(
        lambda: dst.writer_fd(target, exclusive=True))
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        fut.add_done_callback(_close_opened)
        raise


def _close_opened(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled() and fut.exception() is None:
        got = fut.result()
        os.close(got[0] if isinstance(got, tuple) else got)


async def _fetch(src: Vfs, info: FileInfo, sink: _Sink, end: int | None, pin: ReadPin,
                 dst: str, dst_path: str, retry_delays: tuple[float, ...]) -> int:
    """One range, ``[sink.start, end)`` (``end`` None: to the end of the file), resumed at the
    last byte written after a transient failure; the position after its last byte."""
    resume = False
    for delay in (*retry_delays, None):
        try:
            if resume:
                log.info("copy_resumed", vfs=dst, path=dst_path, offset=sink.written)
            pos = await src.read_blocking(info.path, sink.written, sink, end=end, pin=pin)
        except TransientError as exc:
            if delay is None:
                raise
            log.warning("copy_retry", vfs=dst, path=dst_path, error=str(exc),
                        resume_at=sink.written, delay_s=delay)
            resume = True
            await asyncio.sleep(delay)
            continue
        if end is not None and pos < end:
            raise fail(TransferError, src.name, info.path, f"source changed during the copy: "
                       f"read ended at {pos} bytes, expected {info.size}")
        return pos
    raise AssertionError("unreachable")


def _pwrite_all(fd: int, chunk: memoryview, pos: int) -> None:
    while chunk:
        n = os.pwrite(fd, chunk, pos)
        chunk, pos = chunk[n:], pos + n


def _finish(fd: int, mtime: float | None) -> int:
    if mtime is not None:
        os.utime(fd, (mtime, mtime))
    return os.fstat(fd).st_size
