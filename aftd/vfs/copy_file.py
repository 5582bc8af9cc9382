"""Copying one file: temp name (or direct publication), streaming (or kernel copy, or a
server-side copy), verification at the destination, rename into place.

Two of the README's "Invariants" live here. No partial file under its final name: bytes land
under a temporary name in the destination directory and are renamed to the final name only
after the last byte and the checks; any failure or cancellation removes the temporary file.
Backends whose writes become visible only when finished (``Features.publish_on_finish``: object
stores) are written under the final name directly: their writer aborts on failure, and a file
that fails the checks after it was published is removed. Bounded memory: at most one chunk plus
each backend's bounded pipeline is in memory.
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

from aftd import executors, progress
from aftd.errors import TransferError
from aftd.vfs.base import (
    FileInfo,
    PathExistsError,
    PathNotFoundError,
    StreamDigests,
    TransientError,
    Vfs,
    WriteStream,
    fail,
)
from aftd.vfs.copy_direct import (
    direct_download,
    direct_upload,
    download_streams,
    wants_direct_upload,
)
from aftd.vfs.copy_ranges import Ranged, ranged_transfer, stream_plan
from aftd.vfs.paths import join, parent

if TYPE_CHECKING:
    from aftd.vfs.local import LocalVfs

__all__ = ["RETRY_DELAYS", "Delivered", "FileJob", "copy_one"]

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


@dataclass(frozen=True)
class Delivered:
    """One delivered file: its sha256 and how the destination verified it (when verifying),
    and whether the destination server copied it itself."""

    digest: str = ""
    verified_by: str = ""
    server_side: bool = False


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


class _Hashers:
    """sha256, plus what the destination asked for, over the bytes as they stream."""

    def __init__(self, extra: tuple[str, ...]) -> None:
        self.sha256 = hashlib.sha256()
        self.extra = {name: hashlib.new(name) for name in extra if name != "sha256"}

    def update(self, data: bytes | memoryview) -> None:
        self.sha256.update(data)
        for h in self.extra.values():
            h.update(data)

    def digests(self, size: int) -> StreamDigests:
        return StreamDigests(self.sha256.hexdigest(), size,
                             {n: h.hexdigest() for n, h in self.extra.items()})


async def copy_one(job: FileJob) -> Delivered | None:
    """Copy one file; ``None`` when the overwrite policy skipped it. Raises TransferError."""
    if await _skip(job):
        return None
    if job.dst.features.publish_on_finish:
        return await _publish_direct(job)
    name = job.dst_path.rsplit("/", 1)[-1]
    tmp = join(parent(job.dst_path), f".{name}.{secrets.token_hex(4)}.aftd-part")
    try:
        done = await _deliver(job, tmp, [])
        await job.dst.rename(tmp, job.dst_path, overwrite=job.overwrite != "never")
    except BaseException as exc:
        await _discard(job.dst, tmp)
        if isinstance(exc, TransferError) and exc.path == tmp:
            _name_final(exc, tmp, job.dst_path)
        raise
    return done


def _name_final(exc: TransferError, tmp: str, final: str) -> None:
    """Errors about the temporary file name the file the script asked for instead."""
    exc.path = final
    if exc.args and isinstance(exc.args[0], str):
        exc.args = (exc.args[0].replace(repr(tmp), repr(final)), *exc.args[1:])


async def _publish_direct(job: FileJob) -> Delivered:
    """Write under the final name; the writer aborts an unfinished upload by itself (an object
    it replaces stays until the new one is complete). A file that fails the checks after it
    was published is removed: what it holds is not what was sent."""
    landed: list[bool] = []
    try:
        return await _deliver(job, job.dst_path, landed)
    except BaseException:
        if landed:
            await _discard(job.dst, job.dst_path)
        raise


async def _deliver(job: FileJob, target: str, landed: list[bool]) -> Delivered:
    """Put the file at ``target`` (server side when the destination can), check its size and,
    with ``verify``, what the destination stored. Appends to ``landed`` once it is stored."""
    keep = None if not job.src.features.list_mtime else job.src_info.mtime
    size = await job.dst.copy_from(job.src, job.src_info.path, target,
                                   mtime=keep if job.dst.features.set_mtime else None)
    server_side = size is not None
    receipt: object | None = None
    if size is None:
        digests, size, receipt = await _transfer(job, target, landed)
    else:
        landed.append(True)
        _Progress().upto(size)
        digests = await _hash_source(job) if job.verify else None
    _check_size(job, size)
    if digests is None:
        return Delivered(server_side=server_side)
    how = await job.dst.verify_stored(target, digests, receipt)
    return Delivered(digests.sha256, how, server_side)


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
        # A source file may come from a listing (a tree copy); the target from one if prelisted.
        return await _mtime(job.src, job.src_info, True) <= await _mtime(
            job.dst, have, job.existing_known)
    return False


async def _mtime(vfs: Vfs, info: FileInfo, listed: bool) -> float:
    """The modification time a file was stored with. Object stores list upload times (their
    stat reads the stored one), so an entry from a listing of theirs is looked up again."""
    if vfs.features.list_mtime or not listed:
        return info.mtime
    return (await vfs.stat(info.path)).mtime


async def _discard(dst: Vfs, path: str) -> None:
    # Shielded so a cancelled copy still cleans up; errors here must not mask the real one.
    with suppress(Exception, asyncio.CancelledError):
        await asyncio.shield(dst.remove(path))


def _check_size(job: FileJob, size: int) -> None:
    """``size`` is what the destination reports for the written file (not what we sent)."""
    if size != job.src_info.size:
        raise fail(TransferError, job.dst.name, job.dst_path,
                   f"size check failed: wrote {size} bytes, source has {job.src_info.size}")


async def _hash_source(job: FileJob) -> StreamDigests:
    """A server-side copy sent nothing through us: hash the source to know what to expect."""
    h = _Hashers(job.dst.features.stream_digests)
    size = 0
    async with job.src.open_read(job.src_info.path) as r:
        while data := await r.read():
            h.update(data)
            size += len(data)
    return h.digests(size)


Sent = tuple[StreamDigests | None, int, object | None]  # digests, size stored, receipt


async def _transfer(job: FileJob, target: str, landed: list[bool]) -> Sent:
    """Stream (or kernel-copy) the file to ``target``; appends to ``landed`` as soon as the
    destination holds it (a cancel that arrives later must still remove it)."""
    if job.src.features.local_path and job.dst.features.local_path:
        landed.append(True)  # the temporary file exists from the start
        return await _kernel_copy(job, target)
    prog = _Progress()
    streams = await download_streams(job.src, job.dst, job.src_info.size, job.verify)
    if streams:
        landed.append(True)  # the temporary file exists from the start
        return await _direct(job, target, prog, streams)
    ranged = Ranged(job.src, job.src_info, job.dst, job.dst_path, job.verify)
    streams = await stream_plan(ranged)
    if streams > 1:
        return await ranged_transfer(ranged, target, streams, prog.upto, RETRY_DELAYS)
    if wants_direct_upload(job.src, job.dst, job.verify):
        landed.append(True)  # the temporary file exists from the start
        return await _direct(job, target, prog, 1)
    offset = 0
    resume = False
    for delay in (*RETRY_DELAYS, None):
        holder: list[WriteStream] = []
        try:
            if resume:  # the destination may know better what it kept (FTP: its size)
                offset = await job.dst.resume_offset(target, offset)
                log.info("copy_resumed", vfs=job.dst.name, path=job.dst_path, offset=offset)
            return await _stream(job, target, offset, prog, holder, landed)
        except TransientError as exc:
            if delay is None:
                raise
            if job.dst.features.resumable_write and holder:
                offset, resume = holder[0].confirmed, True
            elif not resume:
                offset = 0
            log.warning("copy_retry", vfs=job.dst.name, path=job.dst_path, error=str(exc),
                        resume_at=offset, delay_s=delay)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


async def _direct(job: FileJob, target: str, prog: _Progress, streams: int) -> Sent:
    """Between local disk and a backend with blocking reads (in ``streams`` ranges at once;
    hashed in order on its thread when verified) or writes, on that backend's threads
    (aftd.vfs.copy_direct)."""
    mtime = job.src_info.mtime if job.dst.features.set_mtime else None
    if job.dst.features.local_path:
        dst: LocalVfs = job.dst  # type: ignore[assignment]
        h = _Hashers(job.dst.features.stream_digests) if job.verify else None
        size, _ = await direct_download(job.src, job.src_info, dst, target, job.dst_path,
                                        streams=streams, mtime=mtime, progress=prog.upto,
                                        retry_delays=RETRY_DELAYS,
                                        digest=h.update if h is not None else None)
        return (h.digests(size) if h is not None else None), size, None
    src: LocalVfs = job.src  # type: ignore[assignment]
    size = await direct_upload(src, job.src_info, job.dst, target, job.dst_path,
                               mtime=mtime, progress=prog.upto, retry_delays=RETRY_DELAYS)
    return None, size, None


async def _stream(job: FileJob, target: str, offset: int, prog: _Progress,
                  holder: list[WriteStream], landed: list[bool]) -> Sent:
    h = _Hashers(job.dst.features.stream_digests) if job.verify else None
    if h is not None and offset:
        await _hash_prefix(job, h, offset)
    async with job.src.open_read(job.src_info.path, offset) as r:
        mtime = None
        if job.dst.features.set_mtime:
            mtime = r.mtime if r.mtime is not None else job.src_info.mtime
        async with job.dst.open_write(target, offset, mtime=mtime, size=job.src_info.size,
                                      verify=h is not None) as w:
            holder.append(w)
            pos = offset
            while data := await r.read():
                await w.write(data)
                if h is not None:
                    h.update(data)
                pos += len(data)
                prog.upto(w.confirmed)
            if pos != job.src_info.size:  # before finish: a short copy must not be published
                raise fail(TransferError, job.src.name, job.src_info.path,
                           f"source changed during the copy: read {pos} bytes, expected "
                           f"{job.src_info.size}")
            size = await w.finish(mtime)
            landed.append(True)
            prog.upto(pos)
    return (h.digests(pos) if h is not None else None), size, w.receipt


async def _hash_prefix(job: FileJob, h: _Hashers, upto: int) -> None:
    """Re-hash the bytes a resumed copy does not send again (rare: only after a drop)."""
    pos = 0
    async with job.src.open_read(job.src_info.path, 0) as r:
        while pos < upto and (data := await r.read()):
            take = data[: upto - pos]
            h.update(take)
            pos += len(take)


async def _kernel_copy(job: FileJob, tmp: str) -> Sent:
    """local→local: copy_file_range/sendfile on a file_io thread, no bytes through Python.

    Both files are opened on that thread through their VFS's confinement, and the copy acts on
    those descriptors only.
    """
    src: LocalVfs = job.src  # type: ignore[assignment]
    dst: LocalVfs = job.dst  # type: ignore[assignment]
    stop = threading.Event()
    prog = _Progress()
    loop = asyncio.get_running_loop()

    def report(pos: int) -> None:
        loop.call_soon_threadsafe(prog.upto, pos)

    def run() -> int:
        fin, _ = src.reader_fd(job.src_info.path)
        try:
            fout = dst.writer_fd(tmp, exclusive=True)
            try:
                return _kernel_copy_fds(fin, fout, stop, report, job.src_info.mtime)
            finally:
                os.close(fout)
        finally:
            os.close(fin)

    fut = executors.get(executors.FILE_IO).submit(run)
    try:
        size = await asyncio.shield(fut)
    except asyncio.CancelledError:
        stop.set()  # let the thread notice within one chunk, then clean up behind it
        with suppress(Exception, asyncio.CancelledError):
            await fut
        raise
    except OSError as exc:
        raise fail(TransferError, dst.name, job.dst_path, exc.strerror or str(exc)) from None
    if job.verify:  # no bytes passed through us: hash the source to know what to expect
        return StreamDigests(await src.checksum(job.src_info.path, "sha256"), size), size, None
    return None, size, None


def _kernel_copy_fds(fin: int, fout: int, stop: threading.Event, report: Any,
                     mtime: float) -> int:
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
