"""What keeps a long path busy (README: "Performance at WAN latency"): sessions started all at
once, streams that finish early taking over from slow ones, round trips not spent twice.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from aftd.vfs import copy_ranges
from aftd.vfs.base import PathNotFoundError, ReadStream
from aftd.vfs.handle import VfsHandle
from aftd.vfs.registry import VfsPool
from tests.fixtures.sshd import SshdServer
from tests.vfs.conftest import DictSecrets, make_pool

MIB = 1 << 20


def _pool(srv: SshdServer, local: Path, remote: Path, **opts: Any) -> VfsPool:
    opts.setdefault("streams_min_size", 16 * MIB)
    entries = {"s": srv.vfs_options(root=str(remote), **opts),
               "l": {"type": "local", "root": str(local)}}
    return make_pool(entries, DictSecrets({"sshd-key": srv.user_key_text}))


@pytest.fixture
def dirs(tmp_path: Path, sshd_a: SshdServer) -> tuple[Path, Path]:
    local, remote = tmp_path / "local", sshd_a.root / f"wan-{tmp_path.name}"
    local.mkdir()
    remote.mkdir()
    return local, remote


class _Reader:
    def __init__(self, requested: int = 0) -> None:
        self.requested = requested
        self.limits: list[int] = []

    def limit(self, end: int) -> None:
        self.limits.append(end)


def test_an_idle_stream_takes_over_half_of_the_largest_rest() -> None:
    state = copy_ranges._State([(0, 32 * MIB), (32 * MIB, 64 * MIB), (64 * MIB, 70 * MIB)])
    a, b, _ = state.ranges
    a.reader, b.reader = _Reader(), _Reader(requested=40 * MIB)  # b has read ahead to 40 MiB
    a.sent, b.sent = 4 * MIB, 6 * MIB  # c is done (no reader): never a victim
    new = state.take_over()
    assert new is not None and (new.first, new.end) == (18 * MIB, 32 * MIB)
    assert a.end == 18 * MIB and a.reader.limits == [18 * MIB]
    new2 = state.take_over()  # b: 24 MiB left beyond what it asked for
    assert new2 is not None and (new2.first, new2.end) == (52 * MIB, 64 * MIB)
    spans = sorted((r.first, r.end) for r in state.ranges)
    assert spans[0][0] == 0 and spans[-1][1] == 70 * MIB
    assert all(spans[i][1] == spans[i + 1][0] for i in range(len(spans) - 1))
    a.sent, b.sent = 12 * MIB, 44 * MIB  # 6 and 8 MiB left: halves below the minimum
    b.reader.requested = 0
    assert state.take_over() is None
    assert (a.end, b.end) == (18 * MIB, 52 * MIB)


async def test_a_slow_stream_is_relieved_and_the_copy_is_byte_identical(
        sshd_a: SshdServer, dirs: tuple[Path, Path]) -> None:
    local, remote = dirs
    data = os.urandom(40 * MIB - 777)
    (local / "big.bin").write_bytes(data)
    pool = _pool(sshd_a, local, remote, streams=2)
    src: Any = pool.get("l")
    plain = src.open_read_range

    @asynccontextmanager
    async def slow_first(path: str, start: int, end: int | None,
                         **kw: Any) -> AsyncIterator[ReadStream]:
        async with plain(path, start, end, **kw) as r:
            if start == 0:  # the first range's source crawls; the other stream helps out
                read = r.read

                async def crawl() -> bytes:
                    await asyncio.sleep(0.05)
                    return await read()  # type: ignore[no-any-return]
                r.read = crawl
            yield r

    src.open_read_range = slow_first
    try:
        with capture_logs() as logs:
            res = await VfsHandle(src).copy_to("big.bin", pool.get("s"), "in")
    finally:
        await pool.aclose()
    ranged = [e for e in logs if e["event"] == "copy_ranged"]
    assert [e["streams"] for e in ranged] == [2] and ranged[0]["ranges"] > 2
    assert res.bytes == len(data)
    assert (remote / "in" / "big.bin").read_bytes() == data
    assert [p.name for p in (remote / "in").iterdir()] == ["big.bin"]


async def test_warm_starts_sessions_at_once_and_leases_wait_for_them(
        sshd_a: SshdServer, dirs: tuple[Path, Path]) -> None:
    local, remote = dirs
    pool = _pool(sshd_a, local, remote, max_connections=4, max_sessions=2)
    vfs: Any = pool.get("s")
    connecting = peak = 0
    connect = vfs.pool._connect

    async def counted() -> Any:
        nonlocal connecting, peak
        connecting += 1
        peak = max(peak, connecting)
        try:
            return await connect()
        finally:
            connecting -= 1

    vfs.pool._connect = counted
    try:
        held: list[Any] = []
        release = asyncio.Event()

        async def lease() -> None:
            async with vfs.pool.session() as s:
                held.append(s)
                await release.wait()

        vfs.pool.warm(4)
        tasks = [asyncio.ensure_future(lease()) for _ in range(4)]
        for _ in range(3000):
            if len(held) == 4:
                break
            await asyncio.sleep(0.01)
        release.set()
        await asyncio.gather(*tasks)
        # The leases took the warmed sessions (none opened a fifth), on two connections that
        # connected at the same time.
        assert len({id(s) for s in held}) == 4
        assert sorted(len(c.sessions) for c in vfs.pool._conns) == [2, 2]
        assert peak == 2
    finally:
        await pool.aclose()


async def test_an_error_reply_measures_the_round_trip_and_ranged_writes_create(
        sshd_a: SshdServer, dirs: tuple[Path, Path]) -> None:
    local, remote = dirs
    pool = _pool(sshd_a, local, remote)
    vfs: Any = pool.get("s")
    try:
        with pytest.raises(PathNotFoundError):
            await vfs.stat("missing")
        assert vfs.rtt.rtt is not None  # the "no such file" answer was a round trip too
        async with vfs.open_write_range("new.bin", 4) as w:  # created, not truncated
            await w.write(b"tail")
        async with vfs.open_write_range("new.bin", 0) as w:
            await w.write(b"head")
    finally:
        await pool.aclose()
    assert (remote / "new.bin").read_bytes() == b"headtail"
