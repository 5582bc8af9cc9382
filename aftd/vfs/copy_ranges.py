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

Streams do not all move at the same speed (sessions start at different times, connections share
CPU), so a stream that finishes its range takes over the second half of the largest rest of
another: they all end at about the same time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from aftd.errors import TransferError
from aftd.vfs.base import (
    FileInfo,
    ReadStream,
    StreamDigests,
    TransientError,
    Vfs,
    WriteStream,
    fail,
)

__all__ = ["Ranged", "ranged_transfer", "split", "stream_plan"]

log = structlog.get_logger(__name__)
_ALIGN = 1 << 20  # ranges start at MiB boundaries
# A stream that is done takes over half of what another has left when that half is at least
# this: a take-over costs an open (and a close) on each side, a round trip or two; the window of
# an SSH channel moves about 2 MiB per round trip.
_MIN_TAKE = 4 << 20
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
    """Copy ``job``'s file into ``target`` as ``n`` streams. After a transient error each range
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
                        resume_at=state.confirmed(), delay_s=delay, streams=n)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


def split(size: int, n: int) -> list[tuple[int, int]]:
    """``n`` contiguous ranges covering [0, size), starting on MiB boundaries."""
    step = -(-size // n // _ALIGN) * _ALIGN or _ALIGN
    return [(a, min(a + step, size)) for a in range(0, size, step)]


class _Range:
    """Bytes ``[first, end)`` of the file. ``done``: bytes from ``first`` the destination
    confirmed; ``sent``: bytes from ``first`` handed to the writer. ``end`` only shrinks,
    when an idle stream takes over the rest (never below ``first + sent``)."""

    def __init__(self, first: int, end: int) -> None:
        self.first, self.end = first, end
        self.done = self.sent = 0
        self.reader: object | None = None  # while a stream copies it

    @property
    def left(self) -> int:
        return self.end - self.first - self.done


class _State:
    """What survives a failed attempt: the ranges with the bytes each has confirmed, and the
    version of the source every range must read (object stores: ETag or generation; the first
    range to open learns it) with its mtime."""

    def __init__(self, ranges: list[tuple[int, int]]) -> None:
        self.ranges = [_Range(a, b) for a, b in ranges]
        self.version: str | None = None
        self.mtime: float | None = None
        self.pinned = asyncio.Event()
        self.stored: int | None = None  # the size, when the last stream's finish learnt it

    def others_done(self, rng: _Range) -> bool:
        return all(r.left == 0 for r in self.ranges if r is not rng)

    def confirmed(self) -> int:
        return sum(r.done for r in self.ranges)

    def take_over(self) -> _Range | None:
        """The second half of what the busiest stream has left, as a new range (its stream
        stops where this one starts), or None when no stream has enough left to be worth
        another open (about a stream's window of work, :data:`_MIN_TAKE`)."""
        busy = [r for r in self.ranges if r.reader is not None]
        if not busy:
            return None
        victim = max(busy, key=lambda r: r.end - _ahead(r))
        start = _ahead(victim)
        cut = start + -(-(victim.end - start) // 2 // _ALIGN) * _ALIGN
        if victim.end - cut < _MIN_TAKE or cut <= start:
            return None
        new = _Range(cut, victim.end)
        victim.end = cut
        limit = getattr(victim.reader, "limit", None)
        if callable(limit):  # no read-ahead beyond the new end
            limit(cut)
        self.ranges.append(new)
        return new


def _ahead(r: _Range) -> int:
    """Where ``r``'s stream is: bytes past it were neither written nor asked for yet."""
    requested = getattr(r.reader, "requested", 0)
    return max(r.first + r.sent, requested if isinstance(requested, int) else 0)


async def _attempt(job: Ranged, target: str, state: _State, upto: Callable[[int], None]) -> Sent:
    src, dst, info = job.src, job.dst, job.info
    todo = [r for r in state.ranges if r.left > 0]
    state.stored = None
    for r in todo:
        r.sent = r.done  # this attempt starts over from what the destination confirmed
    tasks: list[asyncio.Future[object]] = [
        asyncio.ensure_future(_stream(job, target, r, state, upto)) for r in todo]
    if job.verify:
        tasks.append(asyncio.ensure_future(src.checksum(info.path, "sha256")))
    try:
        results = await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    finally:
        for r in state.ranges:
            r.reader = None
    stored = state.stored
    if stored is None:  # two streams ended at once: neither knew it was the last
        keep = _mtime(job, state)
        if keep is not None:
            _, got = await asyncio.gather(dst.set_mtime(target, keep), dst.stat(target))
        else:
            got = await dst.stat(target)
        stored = got.size
    log.info("copy_ranged", vfs=dst.name, path=job.dst_path,
             streams=len(todo), ranges=len(state.ranges), bytes=info.size)
    digests = StreamDigests(str(results[-1]), info.size) if job.verify else None
    return digests, stored, None


def _mtime(job: Ranged, state: _State) -> float | None:
    """The modification time to give the file: what a reader learnt (object stores), else the
    listed one; None when the destination keeps none."""
    if not job.dst.features.set_mtime:
        return None
    if state.mtime is not None:
        return state.mtime
    return job.info.mtime if job.src.features.list_mtime else None


async def _stream(job: Ranged, target: str, r: _Range | None, state: _State,
                  upto: Callable[[int], None]) -> None:
    """One stream: its range, then halves taken over from the others while it pays."""
    while r is not None:
        await _copy_range(job, target, r, state, upto)
        r = state.take_over()


async def _copy_range(job: Ranged, target: str, rng: _Range, state: _State,
                      upto: Callable[[int], None]) -> None:
    """``rng`` through a reader and a writer of its own. The stream that ends last (every
    other range confirmed) sets the mtime and learns the size as it closes: one round trip
    where a separate set-mtime and stat would cost another."""
    src, dst, info = job.src, job.dst, job.info
    start = rng.first + rng.done
    # A source without versions tells nothing at open that the others need: every range
    # opens at once, a round trip or two sooner on a long path.
    lead = not state.pinned.is_set() and rng is next(r for r in state.ranges if r.left > 0)
    if not lead and src.features.versioned_reads:
        await state.pinned.wait()
    async with src.open_read_range(info.path, start, rng.end, version=state.version) as r:
        if lead:  # the others may open now; the temporary file is created by whoever is first
            state.version, state.mtime = getattr(r, "version", None), r.mtime
            state.pinned.set()
        rng.reader = r
        try:
            async with dst.open_write_range(target, start) as w:
                await _pump(job, r, w, rng, state, upto)
                if state.others_done(rng):
                    state.stored = await w.finish(_mtime(job, state))
        finally:
            rng.reader = None


async def _pump(job: Ranged, r: ReadStream, w: WriteStream, rng: _Range, state: _State,
                upto: Callable[[int], None]) -> None:
    """Bytes from ``rng``'s confirmed end up to its ``end`` (which may move closer meanwhile)."""
    pos = rng.first + rng.sent
    while pos < rng.end:
        data = await r.read()
        if not data:
            raise fail(TransferError, job.src.name, job.info.path,
                       f"source changed during the copy: read ended at {pos} bytes, "
                       f"expected {job.info.size}")
        if pos + len(data) > rng.end:
            data = data[:rng.end - pos]
        pos += len(data)
        rng.sent = pos - rng.first  # before the write: a take-over starts beyond it
        await w.write(data)
        rng.done = max(rng.done, w.confirmed - rng.first)
        upto(state.confirmed())
    await w.flush()
    rng.done = rng.end - rng.first
    upto(state.confirmed())
