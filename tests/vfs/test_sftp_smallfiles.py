"""Trees of small files over SFTP: files in flight grow while it pays, requests are pipelined,
and publication stays atomic (README: "Performance at WAN latency").

The round-trip tests run sshd behind ``bench/latency_relay.py`` (60 ms), where a tree of small
files is bound by round trips per file; every file's bytes are checked, and no temporary file
may remain, also after a cancel mid-tree.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from aftd.errors import TransferError
from aftd.vfs import copy_pace
from aftd.vfs.copy_pace import Pacer
from aftd.vfs.handle import VfsHandle
from tests.fixtures.sshd import SshdServer
from tests.vfs.conftest import relay_to, relayed_sftp_and_local, sftp_and_local


@pytest.fixture
async def wan(sshd_a: SshdServer) -> AsyncIterator[int]:
    """sshd 60 ms away: a file costs a few round trips whatever its size."""
    async with relay_to(sshd_a, 0.06) as port:
        yield port


def _tree(base: Path, n: int, dirs: int = 4) -> dict[str, bytes]:
    """``n`` files of a few KiB (different sizes, random bytes) in ``dirs`` directories."""
    files: dict[str, bytes] = {}
    for i in range(n):
        rel = f"d{i % dirs}/sub/f{i:04d}.bin"
        data = os.urandom(1000 + 37 * i)
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_bytes(data)
        os.utime(base / rel, (1_600_000_000 + i, 1_600_000_000 + i))
        files[rel] = data
    return files


def _stored(base: Path) -> dict[str, bytes]:
    return {str(p.relative_to(base)): p.read_bytes() for p in base.rglob("*") if p.is_file()}


def _paced(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == "copy_files_in_flight"]


@pytest.mark.slow
@pytest.mark.parametrize("direction", ["up", "down"])
async def test_a_tree_over_a_long_path_grows_its_files_in_flight_and_arrives_whole(
        sshd_a: SshdServer, sftp_dirs: tuple[Path, Path], wan: int, direction: str) -> None:
    local, remote = sftp_dirs
    src_base, dst_base = (local, remote) if direction == "up" else (remote, local)
    files = _tree(src_base / "t", 240)
    pool = relayed_sftp_and_local(sshd_a, local, remote, wan)
    src, dst = ("l", "s") if direction == "up" else ("s", "l")
    try:
        with capture_logs() as logs:
            res = await VfsHandle(pool.get(src)).copy_to("t", pool.get(dst), "in")
    finally:
        await pool.aclose()
    assert res.files == len(files) and not res.failed
    assert _stored(dst_base / "in" / "t") == files  # every file, every byte, nothing else
    for rel in files:  # modification times kept (f0042.bin was made with 1_600_000_042)
        stored = (dst_base / "in" / "t" / rel).stat().st_mtime
        assert int(stored) == 1_600_000_000 + int(rel[-8:-4])
    [paced] = _paced(logs)
    assert paced["cap"] == 64 and paced["files"] == len(files)
    assert paced["peak"] > copy_pace.START  # more files than the old fixed 4 were in flight


async def test_cancel_mid_tree_leaves_no_temporary_file(
        sshd_a: SshdServer, sftp_dirs: tuple[Path, Path], wan: int) -> None:
    local, remote = sftp_dirs
    _tree(local / "t", 400)
    pool = relayed_sftp_and_local(sshd_a, local, remote, wan)
    task = asyncio.ensure_future(VfsHandle(pool.get("l")).copy_to("t", pool.get("s"), "in"))
    out = remote / "in" / "t"
    try:
        for _ in range(6000):  # until files are arriving (and more are in flight)
            with contextlib.suppress(FileNotFoundError):
                if task.done() or sum(1 for p in out.rglob("f*.bin") if p.is_file()) >= 20:
                    break
            await asyncio.sleep(0.01)
        assert not task.done(), "the copy ended before it could be cancelled"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        left = [p.name for p in out.rglob("*") if p.name.endswith(".aftd-part")]
        assert left == []
        delivered = [p for p in out.rglob("f*.bin")]
        assert 20 <= len(delivered) < 400
        for p in delivered:  # what is under a final name is whole
            assert p.read_bytes() == (local / "t" / p.relative_to(out)).read_bytes()
    finally:
        await pool.aclose()


async def test_max_files_in_flight_caps_the_growth_and_a_number_fixes_it(
        sshd_a: SshdServer, sftp_dirs: tuple[Path, Path]) -> None:
    local, remote = sftp_dirs
    files = _tree(local / "t", 120)
    pool = sftp_and_local(sshd_a, local, remote, max_files_in_flight=6)
    try:
        with capture_logs() as logs:
            await VfsHandle(pool.get("l")).copy_to("t", pool.get("s"), "a")
            await VfsHandle(pool.get("l")).copy_to("t", pool.get("s"), "b", transfers=2)
    finally:
        await pool.aclose()
    [paced] = _paced(logs)  # a fixed number is not paced (and logs nothing)
    assert paced["cap"] == 6 and paced["peak"] <= 6
    assert _stored(remote / "a" / "t") == files == _stored(remote / "b" / "t")


async def test_existing_targets_follow_the_overwrite_policy_in_a_paced_tree(
        sshd_a: SshdServer, sftp_dirs: tuple[Path, Path]) -> None:
    local, remote = sftp_dirs
    files = _tree(local / "t", 40, dirs=2)
    (remote / "t" / "d0" / "sub").mkdir(parents=True)
    (remote / "t" / "d0" / "sub" / "f0000.bin").write_bytes(b"old")
    pool = sftp_and_local(sshd_a, local, remote)
    try:
        with pytest.raises(TransferError) as err:
            await VfsHandle(pool.get("l")).copy_to("t", pool.get("s"), "")
        assert "overwrite policy 'never'" in str(err.value)
        res = await VfsHandle(pool.get("l")).copy_to("t", pool.get("s"), "",
                                                     overwrite="if_size_differs")
    finally:
        await pool.aclose()
    assert res.files + res.skipped == len(files)
    assert _stored(remote / "t") == files
    assert [p for p in (remote / "t").rglob("*.aftd-part")] == []


async def test_makedirs_creates_missing_parents_and_refuses_a_file_in_the_way(
        sshd_a: SshdServer, sftp_dirs: tuple[Path, Path]) -> None:
    local, remote = sftp_dirs
    (remote / "file").write_bytes(b"x")
    pool = sftp_and_local(sshd_a, local, remote)
    s = VfsHandle(pool.get("s"))
    try:
        await s.makedirs("a/b/c/d")
        await s.makedirs("a/b/c/d")  # exists: fine
        await asyncio.gather(*(s.makedirs(f"a/x/{i}") for i in range(8)))  # racing parents
        with pytest.raises(TransferError):
            await s.makedirs("file")
        with pytest.raises(TransferError):
            await s.makedirs("file/below")
    finally:
        await pool.aclose()
    assert (remote / "a" / "b" / "c" / "d").is_dir()
    assert sorted(p.name for p in (remote / "a" / "x").iterdir()) == [str(i) for i in range(8)]


# -- the pacer's rules, on a clock the test moves ---------------------------------------------
class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _period(p: Pacer, clock: _Clock, seconds: float, size: int = 4096) -> None:
    """Finish 2 x limit files (one measuring period) taking ``seconds``."""
    n = 2 * p.limit
    for _ in range(n):
        p.started(size)
    clock.now += seconds
    for _ in range(n):
        p.finished(size)


def test_pacer_doubles_while_throughput_rises_then_holds_the_best(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(copy_pace.time, "monotonic", clock)
    p = Pacer(4, 64)
    _period(p, clock, 1.0)  # 8 files/s
    assert p.limit == 8
    _period(p, clock, 1.0)  # 16 files/s: rising
    assert p.limit == 16
    _period(p, clock, 2.0)  # 32 files in 2 s: no better than 16 files/s
    assert p.limit == 8 and not p.growing
    for _ in range(copy_pace.HOLD_PERIODS):  # held; then it measures anew
        _period(p, clock, 1.0)
    assert p.limit == 16 and p.growing


def test_pacer_stops_at_the_cap_and_a_fixed_count_never_changes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(copy_pace.time, "monotonic", clock)
    p = Pacer(4, 10)
    for _ in range(5):
        _period(p, clock, 0.1)
    assert p.limit == 10
    fixed = Pacer(3, 3)
    for _ in range(3):
        fixed.started(1)
    assert not fixed.admits(1)
    _period(fixed, clock, 0.001)
    assert fixed.limit == 3


def test_pacer_weighs_large_files_but_always_runs_the_first_four() -> None:
    p = Pacer(4, 16)
    p.limit = 16
    big = 8 * copy_pace.WEIGHT_BYTES  # weighs 9 slots
    for _ in range(4):
        assert p.admits(big)
        p.started(big)
    assert not p.admits(big)  # 36 slots in use: no fifth large file
    assert not p.admits(1)
    small = Pacer(4, 16)
    small.limit = 16
    for _ in range(16):
        assert small.admits(1000)
        small.started(1000)
    assert not small.admits(1000)
