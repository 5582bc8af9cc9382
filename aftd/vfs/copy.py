"""The copy engine: plan a file or tree copy between two VFS and run it with bounded concurrency.

``copy_tree(src, "reports/2024", dst, "inbox")`` copies the file or directory ``reports/2024``
into ``inbox`` (so the result is ``inbox/2024``, like ``cp -r``); copying the root (``""``)
copies its contents. Include/exclude globs match the path relative to the copied directory or
the file's name. Per-file work (temp name, verification, rename) is in ``aftd.vfs.copy_file``.
"""

from __future__ import annotations

import asyncio
import fnmatch
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from aftd import progress
from aftd.errors import TransferError
from aftd.vfs.base import FileInfo, PathNotFoundError, Vfs, fail
from aftd.vfs.copy_file import FileJob, copy_one
from aftd.vfs.paths import join, parent

__all__ = ["OVERWRITE_POLICIES", "CopyResult", "copy_tree"]

OVERWRITE_POLICIES = ("never", "always", "if_size_differs", "if_newer")
PRELIST_MIN = 16  # files into one directory before listing it beats one stat per file


@dataclass(frozen=True)
class CopyResult:
    files: int  # files copied (skipped ones not counted)
    bytes: int
    duration_s: float
    checksums: dict[str, str] = field(default_factory=dict)  # dest path -> sha256 when verified
    skipped: int = 0


async def copy_tree(
    src: Vfs, src_path: str, dst: Vfs, dst_dir: str, *, overwrite: str = "never",
    verify: str | None = None, include: Sequence[str] = (), exclude: Sequence[str] = (),
    transfers: int = 4,
) -> CopyResult:
    _check_args(src, src_path, overwrite, verify, transfers)
    started = time.monotonic()
    root = await src.stat(src_path)
    dst_base = join(dst_dir, root.name) if root.path else dst_dir
    if root.is_dir:
        files = await _walk(src, root.path, include, exclude)
    else:
        files = [root]
    plan = [(f, join(dst_base, f.path[len(root.path):]) if root.is_dir else dst_base)
            for f in files]
    sink = progress.current()
    if sink is not None:
        sink.add_total(files=len(plan), nbytes=sum(f.size for f, _ in plan))
    await _make_dirs(dst, {parent(d) for _, d in plan} | ({dst_base} if root.is_dir else set()))
    jobs = [FileJob(src, f, dst, d, overwrite, verify) for f, d in plan]
    await _prelist(dst, jobs)
    digests = await _run_all(jobs, transfers)
    copied = [(j, dg) for j, dg in zip(jobs, digests, strict=True) if dg != ""]
    return CopyResult(
        files=len(copied), bytes=sum(j.src_info.size for j, _ in copied),
        duration_s=time.monotonic() - started, skipped=len(jobs) - len(copied),
        checksums={j.dst_path: dg for j, dg in copied if dg},
    )


def _check_args(src: Vfs, path: str, overwrite: str, verify: str | None, transfers: int) -> None:
    if overwrite not in OVERWRITE_POLICIES:
        raise fail(TransferError, src.name, path,
                   f"overwrite must be one of {', '.join(OVERWRITE_POLICIES)}; got {overwrite!r}")
    if verify not in (None, "sha256"):
        raise fail(TransferError, src.name, path,
                   f"verify must be None or 'sha256'; got {verify!r}")
    if not isinstance(transfers, int) or transfers < 1:
        raise fail(TransferError, src.name, path, f"transfers must be >= 1; got {transfers!r}")


async def _walk(src: Vfs, top: str, include: Sequence[str], exclude: Sequence[str],
                ) -> list[FileInfo]:
    out: list[FileInfo] = []
    todo = [top]
    while todo:
        d = todo.pop()
        for e in sorted(await src.listdir(d), key=lambda e: e.path):
            rel = e.path[len(top):].lstrip("/")
            if _matches(rel, e.name, exclude):
                continue
            if e.is_dir:
                todo.append(e.path)
            elif not include or _matches(rel, e.name, include):
                out.append(e)
    return out


def _matches(rel: str, name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(name, p) for p in patterns)


async def _make_dirs(dst: Vfs, dirs: set[str]) -> None:
    # Deepest first would redo parents; makedirs is idempotent, so only leaves are needed.
    leaves = {d for d in dirs if not any(o != d and o.startswith(d + "/") for o in dirs)}
    for d in sorted(leaves):
        if d:
            await dst.makedirs(d)


async def _prelist(dst: Vfs, jobs: list[FileJob]) -> None:
    """Learn what the destination already holds with one listing per busy directory.

    A tree copy would otherwise stat every target (a round trip each over SFTP). Directories
    receiving only a few files are left to per-file stats: listing a huge directory to place
    one file would cost more. A target appearing after the listing is still caught: the final
    rename refuses to replace it unless the policy allows.
    """
    by_dir: dict[str, list[FileJob]] = {}
    for j in jobs:
        by_dir.setdefault(parent(j.dst_path), []).append(j)
    for d, members in by_dir.items():
        if len(members) < PRELIST_MIN:
            continue
        try:
            listing = {e.path: e for e in await dst.listdir(d)}
        except PathNotFoundError:
            listing = {}
        for j in members:
            j.existing, j.existing_known = listing.get(j.dst_path), True


async def _run_all(jobs: list[FileJob], transfers: int) -> list[str | None]:
    """Run file copies ``transfers`` at a time; the first failure cancels the rest."""
    results: list[str | None] = [None] * len(jobs)
    queue = iter(range(len(jobs)))

    async def worker() -> None:
        for i in queue:
            results[i] = await copy_one(jobs[i])
            sink = progress.current()
            if sink is not None:  # a skipped file's bytes count as done, so totals add up
                skipped = jobs[i].src_info.size if results[i] == "" else 0
                sink.advance(files=1, nbytes=skipped)

    try:
        async with asyncio.TaskGroup() as tg:
            for _ in range(min(transfers, len(jobs))):
                tg.create_task(worker())
    except BaseExceptionGroup as eg:
        raise _first(eg) from None
    return results


def _first(eg: BaseExceptionGroup[BaseException]) -> BaseException:
    for exc in eg.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return eg.exceptions[0]
