"""One large file moved as several byte ranges at once (parallel ranged streams).

On a long path one stream is capped by what one SSH channel may have unacknowledged (OpenSSH's
sshd grants 2 MiB: ~20 MB/s at 100 ms), whatever the CPU. A destination with
:attr:`~aftd.vfs.base.Features.ranged_write` lets N streams fill one temporary file at their
offsets, each over a session (SFTP channel) of its own from the pool; the file is published by
the caller's one rename after the size (and, with ``verify``, the destination's) checks, exactly
like a single stream. How many streams comes from the backends (``Vfs.parallel_streams``: the
SFTP ``streams`` key, "auto" from the measured round trip).

Any failure or cancellation of one range cancels the others and waits for them, so the caller
removes a temporary file nothing writes to any more. A transient failure restarts the ranges.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from aftd.errors import TransferError
from aftd.vfs.base import FileInfo, StreamDigests, TransientError, Vfs, fail

__all__ = ["Ranged", "ranged_transfer", "split", "stream_plan"]

log = structlog.get_logger(__name__)
_ALIGN = 1 << 20  # ranges start at MiB boundaries
Sent = tuple[StreamDigests | None, int, object | None]


@dataclass(frozen=True)
class Ranged:
    """The parts of the copy engine's file job a ranged copy needs."""

    src: Vfs
    info: FileInfo
    dst: Vfs
    dst_path: str
    verify: str | None


async def stream_plan(job: Ranged) -> int:
    """How many ranged streams ``job`` should use (1: the ordinary single stream)."""
    src, dst, info = job.src, job.dst, job.info
    if not dst.features.ranged_write or (src.features.local_path and dst.features.local_path):
        return 1
    if job.verify and not _can_hash_source(job):
        return 1  # the digest comes from the stream otherwise, which ranges do not give in order
    # A local side does not limit the streams; a remote one decides (both: the smaller).
    counts = [await v.parallel_streams(info.size) for v in (src, dst)
              if not v.features.local_path]
    return min(counts) if counts else 1


def _can_hash_source(job: Ranged) -> bool:
    src, dst = job.src, job.dst
    return bool(src.features.local_path and "sha256" in src.features.checksums
                and not dst.features.stream_digests)


async def ranged_transfer(job: Ranged, target: str, n: int, upto: Callable[[int], None],
                          retry_delays: tuple[float, ...]) -> Sent:
    """Copy ``job``'s file into ``target`` as ``n`` ranges. After a transient error each range
    resumes from what its destination confirmed, in the same temporary file."""
    state = _State(split(job.info.size, n))
    for delay in (*retry_delays, None):
        try:
            return await _attempt(job, target, state, upto)
        except TransientError as exc:
            if delay is None:
                raise
            log.warning("copy_retry", vfs=job.dst.name,
                        path=job.dst_path, error=str(exc),
                        resume_at=sum(state.done), delay_s=delay, streams=len(state.ranges))
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


def split(size: int, n: int) -> list[tuple[int, int]]:
    """``n`` contiguous ranges covering [0, size), starting on MiB boundaries."""
    step = -(-size // n // _ALIGN) * _ALIGN or _ALIGN
    return [(a, min(a + step, size)) for a in range(0, size, step)]


class _State:
    """What survives a failed attempt: the ranges, the bytes each has confirmed, whether the
    temporary file exists, and the version of the source every range must read (object
    stores: ETag or generation; the first range to open learns it) with its mtime."""

    def __init__(self, ranges: list[tuple[int, int]]) -> None:
        self.ranges = ranges
        self.done = [0] * len(ranges)
        self.created = False
        self.version: str | None = None
        self.mtime: float | None = None
        self.pinned = asyncio.Event()

    def leader(self) -> int:
        """The range that opens first (and pins the version): the first one not done."""
        return next(i for i, (a, b) in enumerate(self.ranges) if self.done[i] < b - a)


async def _attempt(job: Ranged, target: str, state: _State, upto: Callable[[int], None]) -> Sent:
    src, dst, info = job.src, job.dst, job.info
    if not state.created:
        async with dst.open_write(target, 0) as w:  # the empty temporary file the ranges fill
            await w.finish(None)
        state.created = True

    def advance(i: int) -> Callable[[int], None]:
        def moved(nbytes: int) -> None:
            state.done[i] = max(state.done[i], nbytes)
            upto(sum(state.done))
        return moved

    todo = [i for i, (a, b) in enumerate(state.ranges) if state.done[i] < b - a]
    tasks: list[asyncio.Future[object]] = [
        asyncio.ensure_future(_copy_range(job, target, i, state, advance(i))) for i in todo]
    if job.verify:
        tasks.append(asyncio.ensure_future(src.checksum(info.path, "sha256")))
    try:
        results = await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    mtime = state.mtime if state.mtime is not None else (
        info.mtime if src.features.list_mtime else None)
    if dst.features.set_mtime and mtime is not None:
        await dst.set_mtime(target, mtime)
    stored = (await dst.stat(target)).size
    log.info("copy_ranged", vfs=dst.name, path=job.dst_path,
             streams=len(state.ranges), bytes=info.size)
    digests = StreamDigests(str(results[-1]), info.size) if job.verify else None
    return digests, stored, None


async def _copy_range(job: Ranged, target: str, i: int, state: _State,
                      progress: Callable[[int], None]) -> None:
    src, dst, info = job.src, job.dst, job.info
    first, end = state.ranges[i]
    start = first + state.done[i]
    lead = not state.pinned.is_set() and i == state.leader()
    if not lead:
        await state.pinned.wait()
    async with src.open_read_range(info.path, start, end, version=state.version) as r, \
            dst.open_write_range(target, start) as w:
        if lead:
            state.version, state.mtime = getattr(r, "version", None), r.mtime
            state.pinned.set()
        pos = start
        while pos < end:
            data = await r.read()
            if not data:
                raise fail(TransferError, src.name, info.path,
                           f"source changed during the copy: read ended at {pos} bytes, "
                           f"expected {info.size}")
            if pos + len(data) > end:
                data = data[:end - pos]
            await w.write(data)
            pos += len(data)
            progress(w.confirmed - first)
        await w.flush()
        progress(end - first)
