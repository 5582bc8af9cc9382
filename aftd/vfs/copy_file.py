"""Copying one file: temp name, streaming (or kernel copy), verification, rename into place.

Invariant 2: bytes land under a temporary name in the destination directory and are renamed to
the final name only after the last byte and the checks; any failure or cancellation removes the
temporary file. Invariant 3: at most one chunk plus each backend's bounded pipeline is in memory.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import threading
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from aftd import progress
from aftd.errors import TransferError
from aftd.vfs.base import (
    FileInfo,
    PathExistsError,
    PathNotFoundError,
    TransientError,
    Vfs,
    WriteStream,
    fail,
)
from aftd.vfs.paths import join, parent

if TYPE_CHECKING:
    from aftd.vfs.local import LocalVfs

__all__ = ["RETRY_DELAYS", "FileJob", "copy_one"]

log = structlog.get_logger(__name__)
# Backoff between attempts after a transient failure (connection dropped, server restarting).
RETRY_DELAYS: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
_KERNEL_CHUNK = 64 << 20


@dataclass
class FileJob:
    src: Vfs
    src_info: FileInfo
    dst: Vfs
    dst_path: str
    overwrite: str
    verify: str | None
    # What the destination holds under dst_path, when the caller already listed its directory.
    existing: FileInfo | None = None
    existing_known: bool = False


@dataclass
class _Progress:
    """Reports bytes once even when a resumed attempt re-sends some of them."""

    reported: int = 0
    # Captured in the job's context: the kernel-copy thread reports through loop callbacks,
    # which do not run in that context.
    sink: progress.ProgressSink | None = field(default_factory=progress.current)

    def upto(self, pos: int) -> None:
        if pos > self.reported:
            if self.sink is not None:
                self.sink.advance(nbytes=pos - self.reported)
            self.reported = pos


async def copy_one(job: FileJob) -> str | None:
    """Copy one file; returns its sha256 when verified, raises TransferError on failure.

    Returns the empty string for a file skipped by the overwrite policy.
    """
    if await _skip(job):
        return ""
    name = job.dst_path.rsplit("/", 1)[-1]
    tmp = join(parent(job.dst_path), f".{name}.{secrets.token_hex(4)}.aftd-part")
    try:
        digest, size = await _transfer(job, tmp)
        await _check(job, tmp, digest, size)
        await job.dst.rename(tmp, job.dst_path, overwrite=job.overwrite != "never")
    except BaseException:
        await _discard(job.dst, tmp)
        raise
    return digest or None


async def _skip(job: FileJob) -> bool:
    if job.existing_known:
        have = job.existing
    else:
        try:
            have = await job.dst.stat(job.dst_path)
        except PathNotFoundError:
            have = None
    if have is None:
        return False
    if have.is_dir:
        raise fail(PathExistsError, job.dst.name, job.dst_path, "a directory is in the way")
    if job.overwrite == "never":
        raise fail(PathExistsError, job.dst.name, job.dst_path,
                   "target exists (overwrite policy 'never')")
    if job.overwrite == "if_size_differs":
        return have.size == job.src_info.size
    if job.overwrite == "if_newer":
        return job.src_info.mtime <= have.mtime
    return False


async def _discard(dst: Vfs, tmp: str) -> None:
    # Shielded so a cancelled copy still cleans up; errors here must not mask the real one.
    with suppress(Exception, asyncio.CancelledError):
        await asyncio.shield(dst.remove(tmp))


async def _check(job: FileJob, tmp: str, digest: str, size: int) -> None:
    """``size`` is what the destination reports for the written file (not what we sent)."""
    if size != job.src_info.size:
        raise fail(TransferError, job.dst.name, job.dst_path,
                   f"size check failed: wrote {size} bytes, source has {job.src_info.size}")
    if digest and "sha256" in job.dst.features.checksums:
        written = await job.dst.checksum(tmp, "sha256")
        if written != digest:
            raise fail(TransferError, job.dst.name, job.dst_path,
                       f"sha256 mismatch: source {digest}, written {written}")


async def _transfer(job: FileJob, tmp: str) -> tuple[str, int]:
    if job.src.features.local_path and job.dst.features.local_path:
        return await _kernel_copy(job, tmp)
    prog = _Progress()
    offset = 0
    for delay in (*RETRY_DELAYS, None):
        holder: list[WriteStream] = []
        try:
            return await _stream(job, tmp, offset, prog, holder)
        except TransientError as exc:
            if delay is None:
                raise
            resumable = job.dst.features.resumable_write and holder
            offset = holder[0].confirmed if resumable else 0
            log.warning("copy_retry", vfs=job.dst.name, path=job.dst_path, error=str(exc),
                        resume_at=offset, delay_s=delay)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


async def _stream(job: FileJob, tmp: str, offset: int, prog: _Progress,
                  holder: list[WriteStream]) -> tuple[str, int]:
    h = hashlib.sha256() if job.verify else None
    if h is not None and offset:
        await _hash_prefix(job, h, offset)
    async with job.src.open_read(job.src_info.path, offset) as r, \
            job.dst.open_write(tmp, offset) as w:
        holder.append(w)
        pos = offset
        while data := await r.read():
            await w.write(data)
            if h is not None:
                h.update(data)
            pos += len(data)
            prog.upto(w.confirmed)
        mtime = job.src_info.mtime if job.dst.features.set_mtime else None
        size = await w.finish(mtime)
        prog.upto(pos)
    if pos != job.src_info.size:
        raise fail(TransferError, job.src.name, job.src_info.path,
                   f"source changed during the copy: read {pos} bytes, expected "
                   f"{job.src_info.size}")
    return (h.hexdigest() if h is not None else ""), size


async def _hash_prefix(job: FileJob, h: Any, upto: int) -> None:
    """Re-hash the bytes a resumed copy does not send again (rare: only after a drop)."""
    pos = 0
    async with job.src.open_read(job.src_info.path, 0) as r:
        while pos < upto and (data := await r.read()):
            take = data[: upto - pos]
            h.update(take)
            pos += len(take)


async def _kernel_copy(job: FileJob, tmp: str) -> tuple[str, int]:
    """local→local: copy_file_range/sendfile in a worker thread, no bytes through Python."""
    src: LocalVfs = job.src  # type: ignore[assignment]
    dst: LocalVfs = job.dst  # type: ignore[assignment]
    sp, dp = src.os_path(job.src_info.path), dst.os_path(tmp)
    stop = threading.Event()
    prog = _Progress()
    loop = asyncio.get_running_loop()

    def report(pos: int) -> None:
        loop.call_soon_threadsafe(prog.upto, pos)

    mtime = job.src_info.mtime
    fut = loop.run_in_executor(None, _kernel_copy_sync, sp, dp, stop, report, mtime)
    try:
        size = await asyncio.shield(fut)
    except asyncio.CancelledError:
        stop.set()  # let the thread notice within one chunk, then clean up behind it
        with suppress(Exception):
            await fut
        raise
    except OSError as exc:
        raise fail(TransferError, dst.name, job.dst_path, exc.strerror or str(exc)) from None
    if job.verify:
        return await src.checksum(job.src_info.path, "sha256"), size
    return "", size


def _kernel_copy_sync(sp: str, dp: str, stop: threading.Event, report: Any,
                      mtime: float) -> int:
    fin = os.open(sp, os.O_RDONLY)
    try:
        fout = os.open(dp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        try:
            pos = 0
            use_cfr = True
            while not stop.is_set():
                if use_cfr:
                    try:
                        n = os.copy_file_range(fin, fout, _KERNEL_CHUNK)
                    except OSError:  # e.g. EXDEV on old kernels, or an unsupported fs
                        use_cfr = False
                        continue
                else:
                    n = os.sendfile(fout, fin, pos, _KERNEL_CHUNK)
                    os.lseek(fin, pos + n, os.SEEK_SET)
                if n == 0:
                    os.utime(fout, (mtime, mtime))
                    return os.fstat(fout).st_size
                pos += n
                report(pos)
            raise InterruptedError("copy cancelled")  # stopped from the event loop side
        finally:
            os.close(fout)
    finally:
        os.close(fin)
