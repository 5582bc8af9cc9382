"""The copy engine: plan a file or tree copy between two VFS and run it with bounded concurrency.

``copy_tree(src, "reports/2024", dst, "inbox")`` copies the file or directory ``reports/2024``
into ``inbox`` (so the result is ``inbox/2024``, like ``cp -r``); copying the root (``""``)
copies its contents. Include/exclude globs match the path relative to the copied directory or
the file's name. Listing the tree (symlinks, special files) is in ``aftd.vfs.walk``; per-file
work (temp name, verification, rename) is in ``aftd.vfs.copy_file``.

Errors: with ``on_error="stop"`` the first failure cancels the files in flight and is raised,
carrying the destination paths already delivered (``TransferError.delivered``); with
``"continue"`` every file is attempted and failures are listed in ``CopyResult.failed``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import structlog

from aftd import progress
from aftd.errors import TransferError
from aftd.tasks import first_error
from aftd.vfs.base import PathNotFoundError, Vfs, fail
from aftd.vfs.copy_file import Delivered, FileJob, copy_one
from aftd.vfs.copy_pace import START, Pacer
from aftd.vfs.paths import join, parent
from aftd.vfs.result import CopyResult, Failed, Skipped
from aftd.vfs.walk import Listing, Walker, failure

__all__ = ["ON_ERROR", "OVERWRITE_POLICIES", "CopyResult", "Failed", "OnError", "Overwrite",
           "Skipped", "copy_tree"]

log = structlog.get_logger("aftd.vfs.copy")
Overwrite = Literal["never", "always", "if_size_differs", "if_newer"]
OnError = Literal["stop", "continue"]
OVERWRITE_POLICIES: tuple[str, ...] = get_args(Overwrite)
ON_ERROR: tuple[str, ...] = get_args(OnError)
PRELIST_MIN = 16  # files into one directory before listing it beats one stat per file
# Directories created or listed at once before the files start (each a round trip or more).
DIR_OPS_IN_FLIGHT = 16
Transfers = int | Literal["auto"]


async def copy_tree(
    src: Vfs, src_path: str, dst: Vfs, dst_dir: str, *, overwrite: str = "never",
    verify: str | None = None, include: Sequence[str] = (), exclude: Sequence[str] = (),
    transfers: Transfers = "auto", follow_symlinks: bool = False, on_error: str = "stop",
) -> CopyResult:
    _check_args(src, src_path, overwrite, verify, transfers, on_error)
    keep_going = on_error == "continue"
    started = time.monotonic()
    root = await src.stat(src_path)
    dst_base = join(dst_dir, root.name) if root.path else dst_dir
    if root.is_dir:
        listing = await Walker(src, root.path, include, exclude, bool(follow_symlinks),
                               keep_going).run()
    else:
        listing = Listing(files=[root])
    plan = [(f, join(dst_base, f.path[len(root.path):]) if root.is_dir else dst_base)
            for f in listing.files]
    sink = progress.current()
    if sink is not None:
        sink.add_total(files=len(plan), nbytes=sum(f.size for f, _ in plan))
    dirs = {parent(d) for _, d in plan} | ({dst_base} if root.is_dir else set())
    jobs = [FileJob(src, f, dst, d, overwrite, verify) for f, d in plan]
    # Directories first: some servers (FTP) tell a missing directory from a file only vaguely.
    bad_dirs = await _make_dirs(dst, dirs, keep_going)
    await _prelist(dst, jobs, keep_going)
    tally = _Tally(keep_going=keep_going, tree=root.is_dir, total=len(jobs), bad_dirs=bad_dirs)
    pacer = _pacer(src, dst, transfers)
    await tally.run_all(jobs, pacer)
    if pacer.cap > pacer.floor and len(jobs) > pacer.floor:
        log.info("copy_files_in_flight", vfs=src.name, dst_vfs=dst.name, files=len(jobs),
                 peak=pacer.peak, final=pacer.limit, cap=pacer.cap)
    return CopyResult(
        files=len(tally.copied), bytes=sum(j.src_info.size for j, _ in tally.copied),
        duration_s=time.monotonic() - started,
        skipped=tally.skipped + len(listing.links) + len(listing.special),
        checksums={j.dst_path: d.digest for j, d in tally.copied if d.digest},
        verified_by={j.dst_path: d.verified_by for j, d in tally.copied if d.verified_by},
        server_side=sum(1 for _, d in tally.copied if d.server_side),
        skipped_links=listing.links, skipped_special=listing.special,
        failed=listing.failed + tally.failed,
    )


def _pacer(src: Vfs, dst: Vfs, transfers: Transfers) -> Pacer:
    """``transfers`` files at a time; ``"auto"``: grown up to the VFS' ``max_files_in_flight``
    (a backend without that setting keeps the copy at :data:`START` files)."""
    if isinstance(transfers, int):
        return Pacer(transfers, transfers)
    caps = [c for c in (src.files_in_flight_cap(), dst.files_in_flight_cap()) if c is not None]
    return Pacer(min([START, *caps]), min(caps, default=START))


def _check_args(src: Vfs, path: str, overwrite: str, verify: str | None,
                transfers: Transfers, on_error: str) -> None:
    if overwrite not in OVERWRITE_POLICIES:
        raise fail(TransferError, src.name, path,
                   f"overwrite must be one of {', '.join(OVERWRITE_POLICIES)}; got {overwrite!r}")
    if verify not in (None, "sha256"):
        raise fail(TransferError, src.name, path,
                   f"verify must be None or 'sha256'; got {verify!r}")
    if transfers != "auto" and (type(transfers) is not int or transfers < 1):
        raise fail(TransferError, src.name, path,
                   f"transfers must be 'auto' or a whole number >= 1; got {transfers!r}")
    if on_error not in ON_ERROR:
        raise fail(TransferError, src.name, path,
                   f"on_error must be 'stop' or 'continue'; got {on_error!r}")


async def _make_dirs(dst: Vfs, dirs: set[str], keep_going: bool) -> dict[str, TransferError]:
    """Create the destination directories; with ``keep_going``, return those that failed.

    Only leaves are asked for (makedirs creates the parents), several at once; a leaf that
    fails is retried directory by directory to learn which ones are missing, so only their files
    fail. Leaves sharing a missing parent may race to create it: makedirs accepts a directory
    that exists.
    """
    leaves = sorted(d for d in dirs
                    if d and not any(o != d and o.startswith(d + "/") for o in dirs))
    failed: dict[str, TransferError] = {}
    gate = asyncio.Semaphore(DIR_OPS_IN_FLIGHT)

    async def make(d: str) -> None:
        async with gate:
            try:
                await dst.makedirs(d)
            except TransferError:
                if not keep_going:
                    raise
                for p in sorted(x for x in dirs if x and (x == d or d.startswith(x + "/"))):
                    try:
                        await dst.makedirs(p)
                    except TransferError as exc:
                        failed[p] = exc

    # Parents first (one of them, then the rest at once): siblings need not all discover it.
    if len(leaves) > 1:
        await _gather_first_error([make(parent(leaves[0]))] if parent(leaves[0]) else [])
    await _gather_first_error([make(d) for d in leaves])
    return failed


async def _gather_first_error(coros: list[Coroutine[Any, Any, None]]) -> None:
    """Run ``coros`` at once; the first failure cancels the others and is raised."""
    if not coros:
        return
    try:
        async with asyncio.TaskGroup() as tg:
            for c in coros:
                tg.create_task(c)
    except BaseExceptionGroup as eg:
        raise first_error(eg) from None


async def _prelist(dst: Vfs, jobs: list[FileJob], keep_going: bool) -> None:
    """Learn what the destination already holds with one listing per busy directory.

    A tree copy would otherwise stat every target (a round trip each over SFTP). Directories
    receiving only a few files are left to per-file stats: listing a huge directory to place
    one file would cost more. A target appearing after the listing is still caught: the final
    rename refuses to replace it unless the policy allows. Several directories are listed at
    once.
    """
    by_dir: dict[str, list[FileJob]] = {}
    for j in jobs:
        by_dir.setdefault(parent(j.dst_path), []).append(j)
    gate = asyncio.Semaphore(DIR_OPS_IN_FLIGHT)

    async def one(d: str, members: list[FileJob]) -> None:
        async with gate:
            try:
                listing = {e.path: e for e in await dst.listdir(d)}
            except PathNotFoundError:
                listing = {}
            except TransferError:
                if not keep_going:
                    raise
                return  # each file finds out for itself
        for j in members:
            j.existing, j.existing_known = listing.get(j.dst_path), True

    await _gather_first_error([one(d, m) for d, m in by_dir.items() if len(m) >= PRELIST_MIN])


@dataclass
class _Tally:
    """Runs the file copies and keeps the score."""

    keep_going: bool
    tree: bool
    total: int
    bad_dirs: dict[str, TransferError]
    copied: list[tuple[FileJob, Delivered]] = field(default_factory=list)
    skipped: int = 0
    failed: list[Failed] = field(default_factory=list)

    async def run_all(self, jobs: list[FileJob], pacer: Pacer) -> None:
        """Run the file copies as the pacer admits them, in order; when stopping, a failure
        cancels the rest."""

        async def paced(job: FileJob) -> None:
            try:
                await self._one(job)
            finally:
                pacer.finished(job.src_info.size)

        try:
            async with asyncio.TaskGroup() as tg:
                for job in jobs:
                    while not pacer.admits(job.src_info.size):
                        await pacer.wait()
                    pacer.started(job.src_info.size)
                    tg.create_task(paced(job))
        except BaseExceptionGroup as eg:
            exc = first_error(eg)
            if isinstance(exc, TransferError) and self.tree:
                self._annotate(exc)
            raise exc from None

    async def _one(self, job: FileJob) -> None:
        try:
            blocked = self.bad_dirs.get(parent(job.dst_path))
            if blocked is not None:
                raise blocked
            done = await copy_one(job)
        except Exception as exc:
            if not self.keep_going:
                raise
            self.failed.append(failure(job.src_info.path, exc))
            log.warning("copy_file_failed", vfs=job.src.name, path=job.src_info.path,
                        dst_vfs=job.dst.name, error=str(exc))
            _advance(files=1)
            return
        if done is None:
            self.skipped += 1  # a skipped file's bytes count as done, so totals add up
            _advance(files=1, nbytes=job.src_info.size)
        else:
            self.copied.append((job, done))
            _advance(files=1)

    def _annotate(self, exc: TransferError) -> None:
        """Tell the script what it already has: the paths, and a count in the message."""
        exc.delivered = [j.dst_path for j, _ in self.copied]
        n = len(exc.delivered)
        text = exc.args[0] if exc.args else str(exc)
        exc.args = (f"{text} (copy stopped: {n} of {self.total} "
                    f"file{'' if self.total == 1 else 's'} already delivered)",)


def _advance(files: int = 0, nbytes: int = 0) -> None:
    sink = progress.current()
    if sink is not None:
        sink.advance(files=files, nbytes=nbytes)
