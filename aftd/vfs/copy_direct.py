"""One file between a local disk and a backend with blocking reads and writes (FTP), on the
backend's own thread: each chunk is received into (or read from disk into) one reused buffer
and written in place there (``pwrite``, or sent), so no chunk is copied into a new object,
crosses to the event loop, or waits for a file thread. The per-chunk hand-overs of the
streaming path cost about as much CPU as the TLS transfer itself (README: "FTP and FTPS").

Same contract as a streamed copy: local files are opened through the local VFS's confinement
(a new temporary file exclusively), a transient failure resumes (a download at the last byte
written, an upload where the server's copy ends), a cancel waits until the thread has left
the local file (the caller then removes the temporary file), and the size is checked. Not
used with ``verify``: the streaming path hashes on the event loop's thread while the
connection's thread moves the next chunk, where one thread would do both in turn.
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
from aftd.vfs.base import FileInfo, TransientError, Vfs, fail

if TYPE_CHECKING:
    from aftd.vfs.local import LocalVfs

__all__ = ["REPORT_BYTES", "direct_download", "direct_upload", "wants_direct"]

log = structlog.get_logger(__name__)
REPORT_BYTES = 8 << 20  # progress reaches the loop at most once per this many bytes
_REPORT_S = 0.5  # ... or per this long


def wants_direct(src: Vfs, dst: Vfs, verify: str | None) -> bool:
    """A download from a backend with blocking reads to a local file, or an upload from a
    local file to a backend with blocking writes, without ``verify``."""
    if verify:
        return False
    return ((src.features.blocking_read and dst.features.local_path)
            or (src.features.local_path and dst.features.blocking_write))


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
    """Runs on the backend's thread: writes, hashes, counts, and now and then reports."""

    def __init__(self, fd: int, report: Callable[[int], None], dst: str, path: str) -> None:
        self.fd, self.report = fd, report
        self.dst, self.path = dst, path
        self.written = 0  # bytes [0, written) are in the file

    def __call__(self, pos: int, chunk: memoryview) -> None:
        try:
            _pwrite_all(self.fd, chunk, pos)
        except OSError as exc:  # a local failure, not the connection's: not retried
            raise fail(TransferError, self.dst, self.path,
                       exc.strerror or type(exc).__name__) from None
        self.written = pos + len(chunk)
        self.report(self.written)


async def direct_download(src: Vfs, info: FileInfo, dst: LocalVfs, target: str, dst_path: str,
                          *, mtime: float | None, progress: Callable[[int], None],
                          retry_delays: tuple[float, ...]) -> int:
    """Copy ``info`` of ``src`` into the new local file ``target``; returns its size."""
    fd = await _create(dst, target)
    sink = _Sink(fd, _Reporter(progress), dst.name, dst_path)
    try:
        end = await _fetch(src, info, sink, dst.name, dst_path, retry_delays)
        if end != info.size:
            raise fail(TransferError, src.name, info.path,
                       f"source changed during the copy: read {end} bytes, expected {info.size}")
        size = await executors.run(executors.FILE_IO, _finish, fd, mtime)
    except OSError as exc:
        raise fail(TransferError, dst.name, dst_path, exc.strerror or str(exc)) from None
    finally:
        os.close(fd)  # the thread has left the sink: read_blocking waits for it, even on cancel
    progress(size)
    return size


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


async def _fetch(src: Vfs, info: FileInfo, sink: _Sink, dst: str, dst_path: str,
                 retry_delays: tuple[float, ...]) -> int:
    resume = False
    for delay in (*retry_delays, None):
        try:
            if resume:
                log.info("copy_resumed", vfs=dst, path=dst_path, offset=sink.written)
            return await src.read_blocking(info.path, sink.written, sink)
        except TransientError as exc:
            if delay is None:
                raise
            log.warning("copy_retry", vfs=dst, path=dst_path, error=str(exc),
                        resume_at=sink.written, delay_s=delay)
            resume = True
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


def _pwrite_all(fd: int, chunk: memoryview, pos: int) -> None:
    while chunk:
        n = os.pwrite(fd, chunk, pos)
        chunk, pos = chunk[n:], pos + n


def _finish(fd: int, mtime: float | None) -> int:
    if mtime is not None:
        os.utime(fd, (mtime, mtime))
    return os.fstat(fd).st_size
