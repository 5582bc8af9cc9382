"""Parallel ranged streams and "auto" sizing for SFTP (README: "Performance at WAN latency").

A large file moves as N ranges over N SFTP sessions into one temporary file and is published by
one rename after the checks: content identical both ways (also with verify), the final name
never shows a partial file, and a copy cancelled mid-stream leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from aftd.configmodel import Section
from aftd.errors import ConfigError
from aftd.vfs import sftp_auto
from aftd.vfs.config import parse_vfs_section
from aftd.vfs.copy_ranges import split
from aftd.vfs.handle import VfsHandle
from aftd.vfs.registry import VfsPool
from tests.fixtures.sshd import SshdServer
from tests.vfs.conftest import relay_to, relayed_sftp_and_local, sftp_and_local

MIB = 1 << 20


def _pool(srv: SshdServer, local: Path, remote: Path, **opts: Any) -> VfsPool:
    opts.setdefault("streams_min_size", 16 * MIB)
    return sftp_and_local(srv, local, remote, **opts)


def _big(path: Path, mib: int) -> bytes:
    data = os.urandom(mib * MIB - 12345)  # not a multiple of the range alignment
    path.write_bytes(data)
    return data


def _ranged(logs: list[dict[str, Any]]) -> list[int]:
    return [e["streams"] for e in logs if e["event"] == "copy_ranged"]


async def test_upload_and_download_as_four_streams_are_byte_identical(
        sshd_a: SshdServer, sftp_dirs: tuple[Path, Path]) -> None:
    local, remote = sftp_dirs
    data = _big(local / "big.bin", 40)
    mtime = 1_600_000_000
    os.utime(local / "big.bin", (mtime, mtime))
    pool = _pool(sshd_a, local, remote, streams=4)
    try:
        with capture_logs() as logs:
            up = await VfsHandle(pool.get("l")).copy_to("big.bin", pool.get("s"), "in")
            down = await VfsHandle(pool.get("s")).copy_to("in/big.bin", pool.get("l"), "back")
        sftp: Any = pool.get("s")
        sessions = sum(len(c.sessions) for c in sftp.pool._conns)
    finally:
        await pool.aclose()
    assert _ranged(logs) == [4, 4]
    assert sessions >= 4  # each stream had an SFTP channel of its own
    assert up.bytes == down.bytes == len(data)
    assert (remote / "in" / "big.bin").read_bytes() == data
    assert (local / "back" / "big.bin").read_bytes() == data
    assert int((remote / "in" / "big.bin").stat().st_mtime) == mtime
    assert int((local / "back" / "big.bin").stat().st_mtime) == mtime
    leftovers = [p.name for d in (remote / "in", local / "back") for p in d.iterdir()]
    assert leftovers == ["big.bin", "big.bin"]


async def test_verified_ranged_upload_checks_the_stored_file(
        sshd_a: SshdServer, sftp_dirs: tuple[Path, Path]) -> None:
    local, remote = sftp_dirs
    data = _big(local / "v.bin", 30)
    pool = _pool(sshd_a, local, remote, streams=3)
    try:
        with capture_logs() as logs:
            res = await VfsHandle(pool.get("l")).copy_to("v.bin", pool.get("s"), "",
                                                         verify="sha256")
    finally:
        await pool.aclose()
    assert _ranged(logs) == [3]
    assert res.checksums == {"v.bin": hashlib.sha256(data).hexdigest()}
    assert res.verified_by["v.bin"] in ("remote-sha256", "read-back")
    assert (remote / "v.bin").read_bytes() == data


async def test_small_files_and_lan_auto_use_one_stream(
        sshd_a: SshdServer, sftp_dirs: tuple[Path, Path]) -> None:
    local, remote = sftp_dirs
    _big(local / "small.bin", 8)
    _big(local / "big.bin", 24)
    pool = _pool(sshd_a, local, remote)  # streams = "auto" on loopback: one stream
    try:
        with capture_logs() as logs:
            await VfsHandle(pool.get("l")).copy_to("small.bin", pool.get("s"), "")
            await VfsHandle(pool.get("l")).copy_to("big.bin", pool.get("s"), "")
    finally:
        await pool.aclose()
    assert _ranged(logs) == []
    assert (remote / "big.bin").stat().st_size == 24 * MIB - 12345


@pytest.fixture
async def slow_relay(sshd_a: SshdServer) -> AsyncIterator[int]:
    """sshd behind 40 ms of round trip and 8 MB/s each way: a 48 MiB copy takes seconds."""
    async with relay_to(sshd_a, 0.04, rate_bps=8e6) as port:
        yield port


def _relayed_pool(srv: SshdServer, local: Path, remote: Path, port: int, **opts: Any,
                  ) -> VfsPool:
    opts.setdefault("streams_min_size", 16 * MIB)
    return relayed_sftp_and_local(srv, local, remote, port, **opts)


async def test_auto_streams_follow_the_measured_round_trip_and_final_name_is_never_partial(
        sshd_a: SshdServer, sftp_dirs: tuple[Path, Path], slow_relay: int) -> None:
    local, remote = sftp_dirs
    data = _big(local / "wan.bin", 24)
    pool = _relayed_pool(sshd_a, local, remote, slow_relay)
    seen: list[int] = []
    done = asyncio.Event()

    async def watch() -> None:  # whenever the final name exists, it holds the whole file
        while not done.is_set():
            with contextlib.suppress(FileNotFoundError):
                seen.append((remote / "wan.bin").stat().st_size)
            await asyncio.sleep(0.005)

    watcher = asyncio.ensure_future(watch())
    sftp = pool.get("s")
    try:
        with capture_logs() as logs:
            await VfsHandle(pool.get("l")).copy_to("wan.bin", sftp, "")
    finally:
        done.set()
        await watcher
        await pool.aclose()
    rtt = sftp.rtt.rtt  # type: ignore[attr-defined]
    assert rtt is not None and rtt >= 0.04
    assert _ranged(logs) == [sftp_auto.stream_count("auto", rtt, len(data), 16 * MIB, 16)]
    assert _ranged(logs)[0] > 1
    assert all(size == len(data) for size in seen)
    assert (remote / "wan.bin").read_bytes() == data
    assert [p.name for p in remote.iterdir()] == ["wan.bin"]


@pytest.mark.parametrize("direction", ["up", "down"])
async def test_cancel_mid_stream_leaves_nothing(
        sshd_a: SshdServer, sftp_dirs: tuple[Path, Path], slow_relay: int, direction: str) -> None:
    local, remote = sftp_dirs
    src_dir = local if direction == "up" else remote
    dst_dir = remote if direction == "up" else local
    _big(src_dir / "c.bin", 48)
    pool = _relayed_pool(sshd_a, local, remote, slow_relay, streams=4)
    src, dst = ("l", "s") if direction == "up" else ("s", "l")
    (dst_dir / "out").mkdir()
    task = asyncio.ensure_future(
        VfsHandle(pool.get(src)).copy_to("c.bin", pool.get(dst), "out"))
    try:
        for _ in range(6000):  # until a range has written something into the temporary file
            parts = [p for p in (dst_dir / "out").iterdir() if p.name.endswith(".aftd-part")]
            with contextlib.suppress(FileNotFoundError):
                if (parts and parts[0].stat().st_size > 0) or task.done():
                    break
            await asyncio.sleep(0.01)
        assert not task.done(), "the copy ended before it could be cancelled"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert list((dst_dir / "out").iterdir()) == []
    finally:
        await pool.aclose()


def test_requests_in_flight_follow_the_bandwidth_delay_product() -> None:
    bs = 261_120
    assert sftp_auto.requests_in_flight(24, 0.1, bs) == 24  # a number is used as given
    assert sftp_auto.requests_in_flight("auto", None, bs) == sftp_auto.MIN_DEPTH
    assert sftp_auto.requests_in_flight("auto", 0.0002, bs) == sftp_auto.MIN_DEPTH
    at20 = sftp_auto.requests_in_flight("auto", 0.02, bs)
    assert at20 * bs >= 0.02 * sftp_auto.TARGET_RATE and at20 > sftp_auto.MIN_DEPTH
    assert sftp_auto.requests_in_flight("auto", 1.0, bs) == sftp_auto.MAX_DEPTH
    # Writes: on loopback the CPU's 16; beyond, the server's window and a couple ready.
    assert sftp_auto.requests_in_flight("auto", 0.0001, bs, writing=True) == \
        sftp_auto.MAX_WRITE_DEPTH
    at100 = sftp_auto.requests_in_flight("auto", 0.1, bs, writing=True)
    assert at100 == sftp_auto.requests_in_flight("auto", 1.0, bs, writing=True)
    assert (at100 - sftp_auto.WINDOW_SPARE) * bs >= sftp_auto.PEER_WINDOW > \
        (at100 - sftp_auto.WINDOW_SPARE - 1) * bs
    assert sftp_auto.requests_in_flight("auto", 0.1, 32768, writing=True) == \
        sftp_auto.MAX_WRITE_DEPTH  # small requests: the cap, below the window


def test_stream_count_rules() -> None:
    big, floor = 256 * MIB, 64 * MIB
    assert sftp_auto.stream_count("auto", 0.0001, big, floor, 16) == 1  # LAN
    assert sftp_auto.stream_count("auto", None, big, floor, 16) == 1  # unknown
    assert sftp_auto.stream_count("auto", 0.02, big, floor, 16) == 3
    assert sftp_auto.stream_count("auto", 0.1, big, floor, 16) == sftp_auto.MAX_AUTO_STREAMS
    assert sftp_auto.stream_count(6, 0.0, big, floor, 16) == 6
    assert sftp_auto.stream_count(6, 0.0, big, floor, 4) == 4  # no more than the pool's sessions
    assert sftp_auto.stream_count(6, 0.1, floor - 1, floor, 16) == 1  # below the threshold
    assert sftp_auto.stream_count(6, 0.1, 20 * MIB, 16 * MIB, 16) == 2  # >= 8 MiB per stream


@pytest.mark.parametrize(("size", "n"), [(1, 1), (MIB, 4), (40 * MIB - 1, 4), (40 * MIB, 3),
                                    (256 * MIB + 7, 8)])
def test_ranges_cover_the_file_exactly(size: int, n: int) -> None:
    ranges = split(size, n)
    assert ranges[0][0] == 0 and ranges[-1][1] == size and len(ranges) <= n
    assert all(a < b for a, b in ranges)
    assert all(ranges[i][1] == ranges[i + 1][0] for i in range(len(ranges) - 1))


@pytest.mark.parametrize(("key", "value", "ok"), [("streams", "auto", True), ("streams", 4, True),
                                          ("streams", "many", False), ("streams", 0, False),
                                          ("requests_in_flight", "auto", True),
                                          ("requests_in_flight", 64, True),
                                          ("requests_in_flight", "lots", False),
                                          ("streams_min_size", 1024, False)])
def test_config_keys(sshd_a: SshdServer, key: str, value: object, ok: bool) -> None:
    entry = sshd_a.vfs_options(**{key: value})
    section = Section({"s": entry}, "aftd.toml", "vfs")
    if ok:
        assert parse_vfs_section(section)["s"].options[key] == value
    else:
        with pytest.raises(ConfigError, match=rf"aftd.toml: vfs\.s\.{key}: "):
            parse_vfs_section(section)


async def test_sessions_start_in_parallel_and_a_full_pool_waits_for_one(
        sshd_a: SshdServer, sftp_dirs: tuple[Path, Path]) -> None:
    local, remote = sftp_dirs
    wide = _pool(sshd_a, local, remote, max_connections=1, max_sessions=4)
    narrow = _pool(sshd_a, local, remote, max_connections=1, max_sessions=1)
    try:
        held: list[Any] = []
        release = asyncio.Event()

        async def lease(vfs: Any) -> None:
            async with vfs.pool.session() as s:
                held.append(s)
                await release.wait()

        wide_vfs: Any = wide.get("s")
        tasks = [asyncio.ensure_future(lease(wide_vfs)) for _ in range(4)]
        for _ in range(3000):
            if len(held) == 4:
                break
            await asyncio.sleep(0.01)
        assert len({id(s) for s in held}) == 4  # four leases at once: four sessions
        release.set()
        await asyncio.gather(*tasks)
        narrow_vfs: Any = narrow.get("s")
        infos = await asyncio.gather(*(narrow_vfs.stat("") for _ in range(6)))
        assert all(i.is_dir for i in infos)
        assert [len(c.sessions) for c in narrow_vfs.pool._conns] == [1]
    finally:
        await wide.aclose()
        await narrow.aclose()
