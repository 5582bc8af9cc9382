"""Large downloads from the object stores as parallel ranged GETs (README: "Object stores"):
S3 (SeaweedFS), Azure (Azurite) and GCS (fake-gcs-server), through the shared reader
(aftd/vfs/objread.py) and the copy engine's ranged streams (aftd/vfs/copy_ranges.py), or, to
local disk, blocking ranged GETs on threads (aftd/vfs/objget.py, aftd/vfs/copy_direct.py).

The object VFS reaches its server through :class:`CutRelay`, a TCP relay in this process that
records each GET's request head and can cut one connection part-way through a response (what a
network failure does), optionally after replacing the object first, or slow every response down
so a test can cancel half-way.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from structlog.testing import capture_logs

from aftd.configmodel import Section
from aftd.errors import ConfigError, TransferError
from aftd.vfs.config import parse_vfs_section
from aftd.vfs.handle import VfsHandle
from aftd.vfs.registry import VfsPool
from tests.vfs.conftest import DictSecrets, make_pool, target_of

MIB = 1 << 20
KINDS = ["s3", "azure", "gcs"]
# The entry key holding each server's URL (the relay takes its place).
URL_KEY = {"s3": "endpoint", "azure": "account_url", "gcs": "endpoint"}
# What pins a GET to one version of the object.
PIN = {"s3": "if-match:", "azure": "if-match:", "gcs": "ifgenerationmatch="}


@dataclass
class CutRelay:
    """Relays 127.0.0.1:``port`` to ``target``; records GET request heads (lower case); cuts
    (once) the first connection whose responses pass ``cut_after`` bytes while it answers a
    request whose head contains ``cut_if``, after awaiting ``before_cut``; ``pace`` seconds of
    delay per 64 KiB slow every response down."""

    target: tuple[str, int]
    cut_after: int | None = None
    cut_if: str = ""
    before_cut: Callable[[], Awaitable[None]] | None = None
    pace: float = 0.0
    heads: list[str] = field(default_factory=list)
    cuts: int = 0
    port: int = 0
    server: asyncio.Server | None = None
    conns: set[asyncio.Task[Any]] = field(default_factory=set)

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in self.conns:
            task.cancel()
        await asyncio.gather(*self.conns, return_exceptions=True)
        if self.server is not None:
            await self.server.wait_closed()
        for _ in range(5):  # aborted transports close their sockets on the next iterations
            await asyncio.sleep(0.01)

    def gets(self) -> list[str]:
        return [h for h in self.heads if h.startswith("get ")]

    async def _serve(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.conns.add(task)
        try:
            sr, sw = await asyncio.open_connection(*self.target)
        except OSError:
            cw.transport.abort()
            self.conns.discard(task)
            return
        last: list[str] = [""]  # the head of the request being answered
        up = asyncio.ensure_future(self._up(cr, sw, last))
        try:
            await self._down(sr, cw, last)
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            up.cancel()
            await asyncio.gather(up, return_exceptions=True)
            for w in (cw, sw):
                w.transport.abort()
            self.conns.discard(task)

    async def _up(self, cr: asyncio.StreamReader, sw: asyncio.StreamWriter,
                  last: list[str]) -> None:
        while data := await cr.read(1 << 16):
            if data[:4] in (b"GET ", b"HEAD", b"PUT ", b"POST"):
                last[0] = data.split(b"\r\n\r\n")[0].decode("latin-1").lower()
                self.heads.append(last[0])
            sw.write(data)
            await sw.drain()

    async def _down(self, sr: asyncio.StreamReader, cw: asyncio.StreamWriter,
                    last: list[str]) -> None:
        seen = 0
        while data := await sr.read(1 << 16):
            seen += len(data)
            if self.cut_after is not None and seen > self.cut_after and not self.cuts \
                    and self.cut_if in last[0]:
                self.cuts += 1
                if self.before_cut is not None:
                    await self.before_cut()
                return  # the caller aborts both sides: a connection reset mid-response
            cw.write(data)
            await cw.drain()
            if self.pace:
                await asyncio.sleep(self.pace)


@dataclass
class Setup:
    kind: str
    pool: VfsPool
    relay: CutRelay
    local: Path
    data: bytes

    async def download(self, dest: str = "out", **kw: Any) -> Any:
        return await VfsHandle(self.pool.get("obj")).copy_to("big.bin", self.pool.get("l"),
                                                            dest, **kw)

    async def replace_object(self) -> None:
        """New content under the same name, written directly (not through the relay)."""
        (self.local / "new.bin").write_bytes(os.urandom(len(self.data)))
        direct = self.pool.get("direct")
        await VfsHandle(self.pool.get("l")).copy_to("new.bin", direct, "", overwrite="always")
        await direct.rename("new.bin", "big.bin", overwrite=True)

    def dest_names(self, dest: str = "out") -> list[str]:
        d = self.local / dest
        return sorted(p.name for p in d.iterdir()) if d.exists() else []


def _relayed(entry: dict[str, Any], key: str, port: int) -> dict[str, Any]:
    parts = urlsplit(entry[key])
    return {**entry, key: urlunsplit(parts._replace(netloc=f"127.0.0.1:{port}"))}


@pytest.fixture(params=KINDS)
async def setup(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Setup]:
    """An object ``big.bin`` (18 MiB less a bit, so 3 ranges of 5 MiB and a shorter one) with a
    stored mtime, an object VFS ``obj`` with 4 streams through the relay, ``direct`` the same
    without it, and a local VFS ``l``."""
    kind = request.param
    target = target_of(request, kind)
    url = urlsplit(target.entry[URL_KEY[kind]])
    relay = CutRelay((url.hostname or "127.0.0.1", url.port or 80))
    await relay.start()
    local = tmp_path / "l"
    local.mkdir()
    data = os.urandom(18 * MIB - 12345)
    (local / "big.bin").write_bytes(data)
    os.utime(local / "big.bin", (1_600_000_000, 1_600_000_000))
    streams = {"streams": 4, "streams_min_size": 16 * MIB}
    pool = make_pool({"l": {"type": "local", "root": str(local)},
                      "direct": {**target.entry, **streams},
                      "obj": {**_relayed(target.entry, URL_KEY[kind], relay.port), **streams}},
                     DictSecrets(dict(target.secrets)))
    await VfsHandle(pool.get("l")).copy_to("big.bin", pool.get("direct"), "")
    try:
        yield Setup(kind, pool, relay, local, data)
    finally:
        await pool.aclose()
        await relay.stop()


def _ranged(logs: list[dict[str, Any]]) -> list[int]:
    return [e["streams"] for e in logs if e["event"] == "copy_ranged"]


def _range_starts(gets: list[str]) -> list[int]:
    """Where each ranged GET of the object started (Range header, or Azure's x-ms-range)."""
    starts = []
    for head in gets:
        m = re.search(r"^(?:x-ms-)?range: bytes=(\d+)-", head, re.M)
        if m and "big.bin" in head.split("\r\n")[0]:
            starts.append(int(m.group(1)))
    return starts


async def test_a_large_download_moves_as_ranges_and_is_byte_identical(setup: Setup) -> None:
    with capture_logs() as logs:
        res = await setup.download()
    out = setup.local / "out" / "big.bin"
    assert res.bytes == len(setup.data)
    assert _ranged(logs) == [4]
    assert out.read_bytes() == setup.data
    assert int(out.stat().st_mtime) == 1_600_000_000  # the mtime stored with the object
    assert setup.dest_names() == ["big.bin"]  # no temporary file left
    starts = set(_range_starts(setup.relay.gets()))
    assert {0, 5 * MIB, 10 * MIB, 15 * MIB} <= starts, sorted(starts)
    # every range but the first is pinned to the version the first one read
    pinned = [h for h in setup.relay.gets() if "big.bin" in h and PIN[setup.kind] in h]
    assert len(pinned) >= 3, setup.relay.gets()


@pytest.mark.parametrize("streams", [1, 4])
async def test_a_large_download_to_local_disk_runs_on_threads(
        setup: Setup, streams: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Objects of at least 16 MiB go to local disk through blocking ranged GETs on threads
    (aftd/vfs/objget.py), never the streaming reader; one range or several, byte-identical,
    with the stored mtime, no temporary file left."""

    def no_stream(*a: object, **k: object) -> None:
        raise AssertionError("the download went through the streaming reader")

    obj = setup.pool.get("obj")
    obj.streams = streams  # type: ignore[attr-defined]
    monkeypatch.setattr(type(obj), "open_read", no_stream)
    monkeypatch.setattr(type(obj), "open_read_range", no_stream)
    with capture_logs() as logs:
        res = await setup.download()
    out = setup.local / "out" / "big.bin"
    assert res.bytes == len(setup.data)
    assert out.read_bytes() == setup.data
    assert int(out.stat().st_mtime) == 1_600_000_000
    assert setup.dest_names() == ["big.bin"]
    assert _ranged(logs) == ([streams] if streams > 1 else [])
    starts = sorted(_range_starts(setup.relay.gets()))
    assert starts == ([i * 5 * MIB for i in range(4)] if streams == 4 else [0])


async def test_a_verified_large_download_is_one_range_hashed_on_its_thread(
        setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_stream(*a: object, **k: object) -> None:
        raise AssertionError("the download went through the streaming reader")

    obj = setup.pool.get("obj")
    monkeypatch.setattr(type(obj), "open_read_range", no_stream)
    with capture_logs() as logs:
        res = await setup.download(verify="sha256")
    assert res.checksums == {"out/big.bin": hashlib.sha256(setup.data).hexdigest()}
    assert (setup.local / "out" / "big.bin").read_bytes() == setup.data
    assert _ranged(logs) == []
    assert sorted(_range_starts(setup.relay.gets())) == [0]


async def test_a_small_download_and_one_stream_use_a_single_get(setup: Setup) -> None:
    (setup.local / "small.bin").write_bytes(os.urandom(MIB // 2))
    await VfsHandle(setup.pool.get("l")).copy_to("small.bin", setup.pool.get("direct"), "")
    with capture_logs() as logs:
        await VfsHandle(setup.pool.get("obj")).copy_to("small.bin", setup.pool.get("l"), "s")
    assert _ranged(logs) == []
    assert (setup.local / "s" / "small.bin").read_bytes() == \
        (setup.local / "small.bin").read_bytes()


async def test_a_broken_range_resumes_where_it_broke(setup: Setup) -> None:
    setup.relay.cut_after = MIB + MIB // 2
    with capture_logs() as logs:
        res = await setup.download()
    assert setup.relay.cuts == 1
    assert res.bytes == len(setup.data)
    assert (setup.local / "out" / "big.bin").read_bytes() == setup.data
    assert setup.dest_names() == ["big.bin"]
    assert _ranged(logs) == [4]
    assert not [e for e in logs if e["event"] == "copy_retry"]  # only the broken range redid
    resumes = [e for e in logs if e["event"] == f"{setup.kind}_read_resume"]
    if setup.kind == "azure":
        return  # the SDK re-asks for a broken range itself, from the range's start
    assert len(resumes) == 1, resumes
    at = resumes[0]["at"]
    assert at % (5 * MIB) != 0  # part-way through a range...
    assert at in _range_starts(setup.relay.gets())  # ...and asked again from there only


async def test_an_object_replaced_mid_download_fails_the_copy(setup: Setup) -> None:
    """Cut a range that is pinned to the version (so the first range has opened), after
    replacing the object: asking again for the rest of the range must fail."""
    setup.relay.cut_after = MIB + MIB // 2
    setup.relay.cut_if = ""  # any GET: the version is pinned from the first answer on
    setup.relay.before_cut = setup.replace_object
    with pytest.raises(TransferError, match="changed"):
        await setup.download()
    assert setup.relay.cuts == 1
    assert setup.dest_names() == []  # neither the file nor its temporary file


async def test_a_cancelled_download_leaves_no_temporary_file(setup: Setup) -> None:
    setup.relay.pace = 0.02  # about 3 MB/s per connection
    task = asyncio.ensure_future(setup.download())
    out = setup.local / "out"
    try:
        for _ in range(6000):  # until a range has written into the temporary file
            with contextlib.suppress(FileNotFoundError):
                parts = [p for p in out.iterdir() if p.name.endswith(".aftd-part")]
                if (parts and parts[0].stat().st_size > 0) or task.done():
                    break
            await asyncio.sleep(0.01)
        assert not task.done(), "the download ended before it could be cancelled"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        setup.relay.pace = 0.0
    assert setup.dest_names() == []


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("extra", "message"), [
    ({"streams": 0}, "aftd.toml: vfs.b.streams: must be >= 1, got 0"),
    ({"streams": 33}, "aftd.toml: vfs.b.streams: must be <= 32, got 33"),
    ({"streams_min_size": MIB}, "aftd.toml: vfs.b.streams_min_size: must be >= 16777216"),
])
def test_stream_keys_are_checked(kind: str, extra: dict[str, Any], message: str) -> None:
    base: dict[str, Any] = {
        "s3": {"type": "s3", "bucket": "landing", "access_key_secret": "a",
               "secret_key_secret": "b"},
        "azure": {"type": "azure", "account_url": "https://acct.blob.core.windows.net",
                  "container": "drops", "account_key_secret": "k"},
        "gcs": {"type": "gcs", "bucket": "exports"}}[kind]
    assert parse_vfs_section(Section({"b": base}, "aftd.toml", "vfs"))["b"].model_dump()[
        "streams"] == 4
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_vfs_section(Section({"b": {**base, **extra}}, "aftd.toml", "vfs"))


@pytest.mark.parametrize("kind", ["s3", "azure"])
async def test_backends_that_honour_proxy_settings_stream_through_them(
        kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDKs send S3 and Azure requests through the environment's proxy; the blocking GETs
    connect directly, so with a proxy set for the endpoint a download streams instead."""
    entry: dict[str, Any] = {
        "s3": {"type": "s3", "bucket": "landing", "endpoint": "http://s3.example.test:8333",
               "access_key_secret": "a", "secret_key_secret": "b"},
        "azure": {"type": "azure", "account_url": "http://blob.example.test/acct",
                  "container": "drops", "account_key_secret": "k"}}[kind]
    key = "ZmFrZS1rZXktZm9yLXRoZS10ZXN0cw=="  # base64, as an account key is
    pool = make_pool({"o": entry}, DictSecrets({"a": "ak", "b": "sk", "k": key}))
    try:
        for var in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY",
                    "NO_PROXY"):
            monkeypatch.delenv(var, raising=False)
        assert await pool.get("o").blocking_streams(64 * MIB) == 4
        monkeypatch.setenv("http_proxy", "http://proxy.example.test:3128")
        assert await pool.get("o").blocking_streams(64 * MIB) == 0
        monkeypatch.setenv("no_proxy", "example.test")
        assert await pool.get("o").blocking_streams(64 * MIB) == 4
    finally:
        await pool.aclose()
