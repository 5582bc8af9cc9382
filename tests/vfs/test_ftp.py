"""FTP/FTPS-specific behaviour against real servers: vsftpd (TLS session reuse required) and
pyftpdlib, plus pyftpdlib variants (plain FTP, no EPSV/MLSD/MFMT, a PASV answer naming another
host, HASH/XSHA256) and an implicit-TLS vsftpd. The shared behaviour is in test_conformance.py."""

from __future__ import annotations

import asyncio
import hashlib
import os
import resource
import secrets as pysecrets
import shutil
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from aftd.errors import TransferError
from aftd.vfs import copy_file
from aftd.vfs.base import PathEscapeError, PathExistsError, PathNotFoundError, TransientError
from aftd.vfs.copy import CopyResult
from aftd.vfs.ftp import FtpVfs
from aftd.vfs.handle import VfsHandle
from aftd.vfs.registry import VfsPool
from tests.fixtures.ftp import FtpServer, start_pyftpdlib, start_vsftpd
from tests.vfs.conftest import At, DictSecrets, ftp_subroot, make_pool, progress_to, stat_error

MiB = 1 << 20


@pytest.fixture(params=["vsftpd", "pyftpdlib_ftps"])
def ftp_server(request: pytest.FixtureRequest) -> FtpServer:
    server: FtpServer = request.getfixturevalue(request.param)
    return server


def _started(start: Any, workdir: Path, **kw: Any) -> Iterator[FtpServer]:
    srv: FtpServer = start(workdir, **kw)
    try:
        yield srv
    finally:
        srv.stop()
        if srv.kind == "vsftpd":
            shutil.rmtree(srv.root.parent, ignore_errors=True)


@pytest.fixture(scope="module")
def plain_ftp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FtpServer]:
    """pyftpdlib without TLS at all."""
    yield from _started(start_pyftpdlib, tmp_path_factory.mktemp("plain"), tls=False)


@pytest.fixture(scope="module")
def bare_ftps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FtpServer]:
    """pyftpdlib without EPSV, MLST/MLSD and MFMT: PASV, LIST parsing, no way to set mtimes."""
    yield from _started(start_pyftpdlib, tmp_path_factory.mktemp("bare"),
                        disable=["EPSV", "MLST", "MLSD", "MFMT"])


@pytest.fixture(scope="module")
def hashing_ftps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FtpServer]:
    """pyftpdlib with HASH and XSHA256."""
    yield from _started(start_pyftpdlib, tmp_path_factory.mktemp("hash"), hash=True)


@pytest.fixture
def own_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FtpServer]:
    """A server of the test's own (``indirect`` param "vsftpd" or "pyftpdlib"), to kill."""
    start = start_vsftpd if request.param == "vsftpd" else start_pyftpdlib
    yield from _started(start, tmp_path / "server")


def pool_for(srv: FtpServer, tmp_path: Path, secrets: DictSecrets | None = None,
             sub: bool = True, **opts: Any) -> tuple[VfsPool, Path, Path]:
    """A pool with ``f`` on ``srv`` (in a directory of the test's own) and a local ``l``;
    returns it with the two directories as seen on this machine."""
    local = tmp_path / "local"
    local.mkdir(parents=True, exist_ok=True)
    name = f"{tmp_path.name}-{pysecrets.token_hex(3)}"
    remote = ftp_subroot(srv, name) if sub else srv.root
    entries = {"f": srv.vfs_options(root=f"/{name}" if sub else "/", **opts),
               "l": {"type": "local", "root": str(local)}}
    return make_pool(entries, secrets or DictSecrets(srv.secrets)), remote, local


def put_remote(srv: FtpServer, path: Path, data: bytes) -> None:
    """A file in a server's directory that the server may change."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if srv.owner is not None:
        os.chown(path, *srv.owner)
        os.chown(path.parent, *srv.owner)


@pytest.fixture
async def ftp(ftp_server: FtpServer, tmp_path: Path) -> AsyncIterator[tuple[VfsPool, Path, Path]]:
    made = pool_for(ftp_server, tmp_path)
    yield made
    await made[0].aclose()


def debris(d: Path) -> list[str]:
    return [p.name for p in d.rglob("*") if ".aftd-" in p.name]


# -- credentials, certificates, TLS --------------------------------------------------------------

async def test_wrong_password_is_a_clear_error_without_the_secret(ftp_server: FtpServer,
                                                                  tmp_path: Path) -> None:
    wrong = "not-the-password-8f1e2d"
    pool, _, _ = pool_for(ftp_server, tmp_path, DictSecrets({f"{ftp_server.kind}-password": wrong}))
    err = await stat_error(pool, "f")
    msg = str(err)
    assert f"login as aftd@127.0.0.1:{ftp_server.port} was refused" in msg
    assert "530" in msg and "'f'" in msg
    assert wrong not in msg and wrong not in repr(err)
    assert not isinstance(err, TransientError)  # not worth retrying


async def test_missing_password_secret_is_named(ftp_server: FtpServer, tmp_path: Path) -> None:
    pool, _, _ = pool_for(ftp_server, tmp_path, DictSecrets({}),
                          password_secret="partner-ftp-password")
    err = await stat_error(pool, "f")
    assert "'partner-ftp-password' not found" in str(err)
    assert "'f'" in str(err)


async def test_a_root_that_does_not_exist_is_a_clear_error(ftp_server: FtpServer,
                                                           tmp_path: Path) -> None:
    """What an unknown bucket is on an object store: every operation names the missing path,
    and nothing is created on the server."""
    missing = f"no-such-root-{pysecrets.token_hex(3)}"
    local = tmp_path / "local"
    local.mkdir()
    (local / "x.bin").write_bytes(b"x")
    pool = make_pool({"f": ftp_server.vfs_options(root=f"/{missing}"),
                      "l": {"type": "local", "root": str(local)}},
                     DictSecrets(ftp_server.secrets))
    f = pool.get("f")
    try:
        with pytest.raises(PathNotFoundError, match=r"'f'.*no such file or directory"):
            await f.listdir("")
        with pytest.raises(PathNotFoundError, match=rf"'f'.*the VFS root /{missing} does not "
                                                    "exist"):
            await VfsHandle(pool.get("l")).copy_to("x.bin", f, "in")
        with pytest.raises(PathNotFoundError, match=rf"'f'.*the VFS root /{missing} does not "
                                                    "exist"):
            await VfsHandle(pool.get("l")).copy_to("x.bin", f, "")
    finally:
        await pool.aclose()
    assert not (ftp_server.root / missing).exists()


async def test_pinned_certificate_accepted_and_mismatch_refused_with_offered_fingerprint(
        vsftpd: FtpServer, pyftpdlib_ftps: FtpServer, tmp_path: Path) -> None:
    srv, other = vsftpd, pyftpdlib_ftps
    colons = ":".join(srv.cert_sha256[i:i + 2] for i in range(0, 64, 2)).upper()
    good, _, _ = pool_for(srv, tmp_path / "good", ca_file="", cert_sha256=colons)
    bad, _, _ = pool_for(srv, tmp_path / "bad", ca_file="", cert_sha256=other.cert_sha256)
    try:
        assert (await good.get("f").stat("")).is_dir
        with pytest.raises(TransferError) as ei:
            await bad.get("f").stat("")
    finally:
        await good.aclose()
        await bad.aclose()
    msg = str(ei.value)
    assert "not trusted" in msg and f"pinned cert_sha256 {other.cert_sha256}" in msg
    assert f"the server offered {srv.cert_sha256}" in msg


async def test_certificate_of_an_unknown_ca_is_refused(vsftpd: FtpServer,
                                                       pyftpdlib_ftps: FtpServer,
                                                       tmp_path: Path) -> None:
    pool, _, _ = pool_for(vsftpd, tmp_path, ca_file=str(pyftpdlib_ftps.ca_file))
    try:
        with pytest.raises(TransferError, match=r"TLS certificate of 127\.0\.0\.1:\d+ is not "
                                                r"trusted: certificate not trusted"):
            await pool.get("f").stat("")
    finally:
        await pool.aclose()


async def test_plain_ftp_only_when_the_config_says_so(plain_ftp: FtpServer,
                                                      vsftpd: FtpServer,
                                                      tmp_path: Path) -> None:
    # The default (explicit TLS) refuses a server without TLS before the password is sent.
    tls, _, _ = pool_for(plain_ftp, tmp_path / "a", tls="explicit")
    plain, remote, _ = pool_for(plain_ftp, tmp_path / "b")  # the fixture's entry: tls = "none"
    cleartext, _, _ = pool_for(vsftpd, tmp_path / "c", tls="none", ca_file="")
    try:
        with pytest.raises(TransferError, match=r"refused AUTH TLS .*tls = \"none\""):
            await tls.get("f").stat("")
        async with plain.get("f").open_write("p.txt") as w:
            await w.write(b"in the clear")
        assert (remote / "p.txt").read_bytes() == b"in the clear"
        with pytest.raises(TransferError, match=r"login as .* was refused"):
            await cleartext.get("f").stat("")  # vsftpd demands TLS for logins
    finally:
        for p in (tls, plain, cleartext):
            await p.aclose()


@pytest.fixture(scope="module")
def implicit_vsftpd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FtpServer]:
    yield from _started(start_vsftpd, tmp_path_factory.mktemp("implicit"), implicit=True)


async def test_implicit_tls(implicit_vsftpd: FtpServer, tmp_path: Path) -> None:
    pool, remote, local = pool_for(implicit_vsftpd, tmp_path)
    (local / "x.bin").write_bytes(os.urandom(300_000))
    try:
        res = await VfsHandle(pool.get("l")).copy_to("x.bin", pool.get("f"), "in",
                                                     verify="sha256")
        assert res.files == 1
        assert (remote / "in" / "x.bin").read_bytes() == (local / "x.bin").read_bytes()
    finally:
        await pool.aclose()


# -- data connections ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def redirecting_ftps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FtpServer]:
    """pyftpdlib without EPSV whose PASV answers name another address (127.0.0.2)."""
    yield from _started(start_pyftpdlib, tmp_path_factory.mktemp("redirect"),
                        disable=["EPSV"], masquerade_address="127.0.0.2")


async def test_a_pasv_answer_naming_another_host_is_refused(redirecting_ftps: FtpServer,
                                                            tmp_path: Path) -> None:
    pool, remote, _ = pool_for(redirecting_ftps, tmp_path)
    try:
        with pytest.raises(TransferError, match=r"PASV reply names 127\.0\.0\.2:\d+, not its "
                                                r"own address 127\.0\.0\.1; refused"):
            async with pool.get("f").open_write("x.txt") as w:
                await w.write(b"x")
    finally:
        await pool.aclose()
    assert not (remote / "x.txt").exists()


async def test_pasv_list_parsing_and_no_mtime_command(bare_ftps: FtpServer,
                                                      tmp_path: Path) -> None:
    pool, remote, local = pool_for(bare_ftps, tmp_path)
    (local / "t" / "sub").mkdir(parents=True)
    for name in ("a b.txt", ".dot", "sub/c"):
        (local / "t" / name).write_bytes(name.encode())
        os.utime(local / "t" / name, (1_600_000_000, 1_600_000_000))
    try:
        with capture_logs() as logs:
            res = await VfsHandle(pool.get("l")).copy_to("t", pool.get("f"), "", verify="sha256")
        assert res.files == 3
        warned = [e for e in logs if e["event"] == "ftp_mtime_not_preserved"]
        assert len(warned) == 1  # said once per VFS, not per file
        entries = {e.name: e for e in await pool.get("f").listdir("t")}  # LIST, then MDTM
        assert set(entries) == {"a b.txt", ".dot", "sub"}
        assert entries["a b.txt"].mtime == (remote / "t" / "a b.txt").stat().st_mtime // 1
        back = await VfsHandle(pool.get("f")).copy_to("t", pool.get("l"), "back")
        assert back.files == 3
        assert (local / "back" / "t" / "sub" / "c").read_bytes() == b"sub/c"
    finally:
        await pool.aclose()


async def test_active_mode(pyftpdlib_ftps: FtpServer, tmp_path: Path) -> None:
    pool, remote, _ = pool_for(pyftpdlib_ftps, tmp_path, passive=False)
    data = os.urandom(1_000_000)
    try:
        f = pool.get("f")
        async with f.open_write("act.bin") as w:
            await w.write(data)
        assert (remote / "act.bin").read_bytes() == data
        assert [e.name for e in await f.listdir("")] == ["act.bin"]
    finally:
        await pool.aclose()


# -- paths ------------------------------------------------------------------------------------------

async def test_injection_and_foreign_separators_are_refused_before_sending(
        ftp: tuple[VfsPool, Path, Path]) -> None:
    pool, remote, _ = ftp
    f = pool.get("f")
    (remote / "victim").write_bytes(b"keep me")
    for bad in ("x\r\nDELE victim", "x\nRMD .", "..\\..\\etc", "..%2F..%2Fetc%2Fpasswd"):
        with pytest.raises(PathEscapeError):
            async with f.open_write(bad) as w:
                await w.write(b"x")
        with pytest.raises(PathEscapeError):
            await f.stat(bad)
    assert sorted(p.name for p in remote.iterdir()) == ["victim"]


async def test_listing_leaves_out_names_a_client_cannot_address(
        ftp: tuple[VfsPool, Path, Path]) -> None:
    pool, remote, _ = ftp
    for name in ("ok.txt", "back\\slash", "line\nbreak"):
        (remote / name).write_bytes(b"x")
    with capture_logs() as logs:
        names = sorted(e.name for e in await pool.get("f").listdir(""))
    # vsftpd lists the line break as "?"; pyftpdlib sends it, splitting the line in two
    assert "ok.txt" in names
    assert not any("\\" in n or "\n" in n or "\r" in n for n in names), names
    assert {e["event"] for e in logs} & {"ftp_listing_name_refused", "ftp_list_line_unparsed"}


# -- the pool ---------------------------------------------------------------------------------------

async def test_connections_are_bounded_and_reused(ftp_server: FtpServer, tmp_path: Path) -> None:
    pool, remote, _ = pool_for(ftp_server, tmp_path, max_connections=2)
    put_remote(ftp_server, remote / "f", os.urandom(2 * MiB))
    f = pool.get("f")
    assert isinstance(f, FtpVfs)
    peak = 0

    async def read_all() -> int:
        nonlocal peak
        n = 0
        async with f.open_read("f") as r:
            while chunk := await r.read():
                n += len(chunk)
                peak = max(peak, f.pool._count)
                await asyncio.sleep(0)
        return n

    try:
        assert await asyncio.gather(*(read_all() for _ in range(8))) == [2 * MiB] * 8
        assert 1 <= peak <= 2
        assert len(f.pool._idle) <= 2
    finally:
        await pool.aclose()


async def test_copy_within_one_server_needs_no_more_than_one_extra_connection(
        ftp_server: FtpServer, tmp_path: Path) -> None:
    pool, remote, _ = pool_for(ftp_server, tmp_path, max_connections=1)
    for i in range(6):
        put_remote(ftp_server, remote / "t" / f"f{i}", os.urandom(100_000 + i))
    f = pool.get("f")
    try:
        res = await asyncio.wait_for(VfsHandle(f).copy_to("t", f, "copy", transfers=4), 60)
        assert res.files == 6
        assert (remote / "copy" / "t" / "f5").read_bytes() == (remote / "t" / "f5").read_bytes()
        assert f.pool._count <= 2  # type: ignore[attr-defined]
    finally:
        await pool.aclose()


@pytest.mark.parametrize("own_server", ["vsftpd", "pyftpdlib"], indirect=True)
async def test_reconnects_transparently_after_a_server_restart(own_server: FtpServer,
                                                               tmp_path: Path) -> None:
    pool, _, _ = pool_for(own_server, tmp_path, sub=False)
    f = pool.get("f")
    try:
        assert (await f.stat("")).is_dir
        own_server.kill()
        own_server.start()
        assert (await f.stat("")).is_dir  # the dead idle connection is replaced, no error
    finally:
        await pool.aclose()


async def test_keepalive_and_idle_timeout(pyftpdlib_ftps: FtpServer, tmp_path: Path) -> None:
    pool, _, _ = pool_for(pyftpdlib_ftps, tmp_path, keepalive_s=0.2, idle_timeout_s=1.5)
    f = pool.get("f")
    assert isinstance(f, FtpVfs)
    try:
        await f.stat("")
        conn = f.pool._idle[0]
        first = conn.last_noop
        for _ in range(200):  # a NOOP goes out while idle...
            if conn.last_noop > first:
                break
            await asyncio.sleep(0.05)
        assert conn.last_noop > first
        for _ in range(400):  # ...and the idle connection is closed after idle_timeout_s
            if f.pool._count == 0:
                break
            await asyncio.sleep(0.05)
        assert (f.pool._count, f.pool._idle) == (0, [])
        assert (await f.stat("")).is_dir  # and a new one is made on demand
    finally:
        await pool.aclose()


# -- copies: mtime, policies, verify ----------------------------------------------------------------

async def test_copy_preserves_mtime_and_honours_overwrite_policies(
        ftp: tuple[VfsPool, Path, Path]) -> None:
    pool, remote, local = ftp
    src, dst = VfsHandle(pool.get("l")), pool.get("f")
    (local / "f.txt").write_text("new content")
    os.utime(local / "f.txt", (1_650_000_000, 1_650_000_000))
    await src.copy_to("f.txt", dst, "")
    assert (remote / "f.txt").stat().st_mtime == 1_650_000_000
    assert (await dst.stat("f.txt")).mtime == 1_650_000_000
    with pytest.raises(PathExistsError, match=r"'f'.*f\.txt.*exists"):
        await src.copy_to("f.txt", dst, "")
    os.utime(local / "f.txt", (1000, 1000))
    res = await src.copy_to("f.txt", dst, "", overwrite="if_newer")  # older: kept
    assert (res.files, res.skipped) == (0, 1)
    res = await src.copy_to("f.txt", dst, "", overwrite="if_size_differs")  # same size: kept
    assert (res.files, res.skipped) == (0, 1)
    (local / "f.txt").write_text("newer, longer content")
    res = await src.copy_to("f.txt", dst, "", overwrite="if_newer")
    assert (res.files, (remote / "f.txt").read_text()) == (1, "newer, longer content")
    (remote / "f.txt").write_text("same length content!!")
    res = await src.copy_to("f.txt", dst, "", overwrite="always")
    assert (remote / "f.txt").read_text() == "newer, longer content"
    assert debris(remote) == []


async def test_server_side_hash_is_used_where_offered(hashing_ftps: FtpServer,
                                                      tmp_path: Path) -> None:
    pool, remote, local = pool_for(hashing_ftps, tmp_path)
    data = os.urandom(3 * MiB + 5)
    (local / "h.bin").write_bytes(data)
    f = pool.get("f")
    assert isinstance(f, FtpVfs)
    try:
        res = await VfsHandle(pool.get("l")).copy_to("h.bin", f, "", verify="sha256")
        assert res.checksums == {"h.bin": hashlib.sha256(data).hexdigest()}
        assert res.verified_by == {"h.bin": "remote-sha256"}
        (remote / "h.bin").write_bytes(b"changed behind our back")
        assert await f.checksum("h.bin", "sha256") == hashlib.sha256(
            b"changed behind our back").hexdigest()
    finally:
        await pool.aclose()


# -- parallel ranged downloads ----------------------------------------------------------------------

async def test_a_large_download_moves_as_parallel_ranges(ftp_server: FtpServer,
                                                         tmp_path: Path) -> None:
    pool, remote, local = pool_for(ftp_server, tmp_path, streams=4, streams_min_size=16 * MiB,
                                   max_connections=3)
    block = os.urandom(MiB)
    data = b"".join(i.to_bytes(4, "big") + block[4:] for i in range(40)) + b"tail"
    put_remote(ftp_server, remote / "big.bin", data)
    os.utime(remote / "big.bin", (1_600_000_000, 1_600_000_000))
    f = pool.get("f")
    assert isinstance(f, FtpVfs)
    try:
        assert await f.parallel_streams(len(data)) == 3  # streams, at most max_connections
        assert await f.parallel_streams(16 * MiB - 1) == 1
        with capture_logs() as logs:
            res = await VfsHandle(f).copy_to("big.bin", pool.get("l"), "down")
            verified = await VfsHandle(f).copy_to("big.bin", pool.get("l"), "checked",
                                                  verify="sha256")
        assert (res.files, res.bytes) == (1, len(data))
        ranged = [e for e in logs if e["event"] == "copy_ranged"]
        assert [(e["streams"], e["bytes"]) for e in ranged] == [(3, len(data))]  # not verified
        assert (local / "down" / "big.bin").read_bytes() == data
        assert (local / "down" / "big.bin").stat().st_mtime == 1_600_000_000
        assert verified.checksums == {"checked/big.bin": hashlib.sha256(data).hexdigest()}
        assert (local / "checked" / "big.bin").read_bytes() == data
        assert debris(local) == []
        assert f.pool._count <= 3  # type: ignore[attr-defined]
        assert (await f.stat("big.bin")).size == len(data)  # the pool works on after the cuts
    finally:
        await pool.aclose()


async def test_ranges_to_local_disk_run_on_the_connections_threads(
        ftp_server: FtpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default ``streams`` (4) splits a large download to local disk into ranges moved on
    the connections' threads (aftd.vfs.copy_direct), never through a streaming reader."""
    pool, remote, local = pool_for(ftp_server, tmp_path, streams_min_size=16 * MiB)
    data = os.urandom(20 * MiB + 777)
    put_remote(ftp_server, remote / "r.bin", data)

    def no_stream(*a: object, **k: object) -> None:
        raise AssertionError("the download went through the streaming reader")

    monkeypatch.setattr(FtpVfs, "open_read", no_stream)
    monkeypatch.setattr(FtpVfs, "open_read_range", no_stream)
    try:
        with capture_logs() as logs:
            res = await VfsHandle(pool.get("f")).copy_to("r.bin", pool.get("l"), "in")
        assert res.bytes == len(data)
        assert [e["streams"] for e in logs if e["event"] == "copy_ranged"] == [4]
        assert (local / "in" / "r.bin").read_bytes() == data
        assert debris(local) == []
    finally:
        await pool.aclose()


# -- failures half-way ---------------------------------------------------------------------------------

@pytest.mark.parametrize("upload", [True, False], ids=["upload", "download"])
async def test_cancel_half_way_leaves_no_file_and_no_temp(ftp: tuple[VfsPool, Path, Path],
                                                          upload: bool) -> None:
    pool, remote, local = ftp
    size = 64 * MiB
    block = os.urandom(MiB)
    with open((local if upload else remote) / "big.bin", "wb") as fh:
        for _ in range(size // MiB):
            fh.write(block)
    src, dst = (pool.get("l"), pool.get("f")) if upload else (pool.get("f"), pool.get("l"))
    holder: list[asyncio.Task[CopyResult]] = []
    sink = At(size // 2, lambda: holder[0].cancel())
    with progress_to(sink):
        holder.append(asyncio.create_task(VfsHandle(src).copy_to("big.bin", dst, "o")))
    with pytest.raises(asyncio.CancelledError):
        await holder[0]
    assert size // 2 <= sink.bytes_done < size
    out = (remote if upload else local) / "o"
    assert list(out.iterdir()) == []  # neither the final name nor a temporary file
    f = pool.get("f")
    assert isinstance(f, FtpVfs)
    assert (await f.stat("")).is_dir  # the pool works on after the cut transfer


def _kill(srv: FtpServer, restart: bool) -> None:
    srv.kill()
    if restart:
        srv.start()


async def _copy_with_kill(srv: FtpServer, tmp_path: Path, upload: bool, restart: bool,
                          verify: str | None = "sha256",
                          ) -> tuple[Path, str, CopyResult | BaseException]:
    data = os.urandom(MiB) * 40 + os.urandom(12345)
    digest = hashlib.sha256(data).hexdigest()
    pool, remote, local = pool_for(srv, tmp_path, sub=False, timeout_s=10)
    if upload:
        (local / "f.bin").write_bytes(data)
    else:
        srv.write("f.bin", data)
    src, dst = (pool.get("l"), pool.get("f")) if upload else (pool.get("f"), pool.get("l"))
    sink = At(len(data) // 3, lambda: _kill(srv, restart))
    try:
        with progress_to(sink):
            result: CopyResult | BaseException = await VfsHandle(src).copy_to(
                "f.bin", dst, "out", verify=verify)
    except TransferError as exc:
        result = exc
    finally:
        await pool.aclose()
    assert sink.fired
    return (remote if upload else local) / "out", digest, result


@pytest.mark.parametrize("own_server", ["vsftpd", "pyftpdlib"], indirect=True)
@pytest.mark.parametrize("upload", [True, False], ids=["upload", "download"])
async def test_server_killed_mid_transfer_fails_cleanly(own_server: FtpServer, tmp_path: Path,
                                                        upload: bool,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(copy_file, "RETRY_DELAYS", (0.05, 0.1))
    out_dir, _, result = await _copy_with_kill(own_server, tmp_path, upload, restart=False)
    assert isinstance(result, TransferError), result
    assert "'f'" in str(result) or "'l'" in str(result)
    assert not (out_dir / "f.bin").exists()  # never a partial file under the final name
    if not upload:  # the local side could clean up its temporary file
        assert list(out_dir.iterdir()) == []


@pytest.mark.parametrize("own_server", ["vsftpd", "pyftpdlib"], indirect=True)
@pytest.mark.parametrize("upload", [True, False], ids=["upload", "download"])
@pytest.mark.parametrize("verify", ["sha256", None], ids=["streamed", "direct"])
async def test_server_restarted_mid_transfer_resumes(own_server: FtpServer, tmp_path: Path,
                                                     upload: bool, verify: str | None) -> None:
    """Streamed (verify: hashed on the loop) and on the connection's thread (no verify, local
    disk on the other side: aftd.vfs.copy_direct) alike."""
    with capture_logs() as logs:
        out_dir, digest, result = await _copy_with_kill(own_server, tmp_path, upload,
                                                        restart=True, verify=verify)
    assert isinstance(result, CopyResult), result
    assert [e for e in logs if e["event"] == "copy_retry"]
    resumed = [e["offset"] for e in logs if e["event"] == "copy_resumed"]
    assert resumed and resumed[-1] > 0  # continued where the server's copy ended
    assert result.checksums == ({"out/f.bin": digest} if verify else {})
    assert hashlib.sha256((out_dir / "f.bin").read_bytes()).hexdigest() == digest
    assert [p.name for p in out_dir.iterdir()] == ["f.bin"]


# -- local disk to and from FTP on the transfer's thread (aftd.vfs.copy_direct) --------------------

async def test_a_download_to_local_disk_never_crosses_to_the_event_loop(
        ftp: tuple[VfsPool, Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Byte-identical, mtime kept, and no streaming reader involved."""
    pool, remote, local = ftp
    data = os.urandom(3 * MiB + 12345)  # chunks of every size: full blocks and a short tail
    (remote / "d.bin").write_bytes(data)
    os.utime(remote / "d.bin", (1_700_000_000, 1_700_000_000))

    def no_stream(*a: object, **k: object) -> None:
        raise AssertionError("the download went through the streaming reader")

    monkeypatch.setattr(FtpVfs, "open_read", no_stream)
    res = await VfsHandle(pool.get("f")).copy_to("d.bin", pool.get("l"), "in")
    assert (local / "in" / "d.bin").read_bytes() == data
    assert res.bytes == len(data)
    assert (local / "in" / "d.bin").stat().st_mtime == 1_700_000_000
    assert debris(local) == []


async def test_an_upload_from_local_disk_never_crosses_to_the_event_loop(
        ftp: tuple[VfsPool, Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Byte-identical, the stored size checked, and no streaming writer involved."""
    pool, remote, local = ftp
    data = os.urandom(3 * MiB + 54321)
    (local / "u.bin").write_bytes(data)

    def no_stream(*a: object, **k: object) -> None:
        raise AssertionError("the upload went through the streaming writer")

    monkeypatch.setattr(FtpVfs, "open_write", no_stream)
    res = await VfsHandle(pool.get("l")).copy_to("u.bin", pool.get("f"), "up")
    assert (remote / "up" / "u.bin").read_bytes() == data
    assert res.bytes == len(data)
    assert debris(remote) == []


async def test_a_local_write_failure_in_a_download_is_not_retried(
        ftp: tuple[VfsPool, Path, Path]) -> None:
    """A full disk (here: the file size limit) is the local VFS's error, named as such, not a
    connection problem to retry; the temporary file goes and the connection pool works on."""
    pool, remote, local = ftp
    (remote / "big.bin").write_bytes(os.urandom(12 * MiB))
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a signal
    resource.setrlimit(resource.RLIMIT_FSIZE, (4 * MiB, hard))
    try:
        with capture_logs() as logs, pytest.raises(TransferError) as caught:
            await VfsHandle(pool.get("f")).copy_to("big.bin", pool.get("l"), "in")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)
    assert "'l'" in str(caught.value) and "too large" in str(caught.value).lower()
    assert not [e for e in logs if e["event"] == "copy_retry"]
    assert debris(local) == [] and not (local / "in" / "big.bin").exists()
    assert (await pool.get("f").stat("big.bin")).size == 12 * MiB


# -- between backends (the copy matrix covers every pair) -------------------------------------------

@pytest.mark.parametrize(("a", "b"), [("l1", "f1"), ("f1", "l1"), ("s1", "f1"), ("f1", "s1"),
                                      ("f2", "f1"), ("f1", "f2")])
async def test_copy_file_and_tree_between_backends(pool: VfsPool, ftp_pool: VfsPool,
                                                   a: str, b: str) -> None:
    from tests.vfs.conftest import LOCAL_ROOTS

    def vfs(name: str) -> Any:
        return (ftp_pool if name.startswith("f") else pool).get(name)

    def root(name: str) -> Path:
        v = vfs(name)
        if v in LOCAL_ROOTS:
            return LOCAL_ROOTS[v]
        return Path(v.root if isinstance(v.root, str) else v._root_cfg)

    tree = {f"t/d{i % 3}/f{i}.bin": os.urandom(i * 997) for i in range(20)}
    tree["t/big.bin"] = os.urandom(6 * MiB + 3)
    for rel, data in tree.items():
        p = root(a) / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        os.utime(p, (1_600_000_000, 1_600_000_000))
    res = await VfsHandle(vfs(a)).copy_to("t", vfs(b), "in", verify="sha256")
    assert res.files == len(tree)
    for rel, data in tree.items():
        got = root(b) / "in" / rel
        assert got.read_bytes() == data, rel
        assert got.stat().st_mtime == 1_600_000_000
    assert set(res.checksums) == {f"in/{rel}" for rel in tree}
    if b.startswith("f"):  # neither server offers HASH/XSHA256: the file is read back
        assert set(res.verified_by.values()) == {"read-back"}
    assert debris(root(b)) == []
