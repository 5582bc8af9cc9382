"""FTP/FTPS-specific behaviour against real servers: vsftpd (TLS session reuse required) and
pyftpdlib, plus pyftpdlib variants (plain FTP, no EPSV/MLSD/MFMT, a PASV answer naming another
host) and an implicit-TLS vsftpd: credentials, certificates, data connections, paths, the
connection pool. Transfers are in test_ftp_transfers.py, the shared behaviour in
test_conformance.py."""

from __future__ import annotations

import asyncio
import os
import secrets as pysecrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from aftd.errors import TransferError
from aftd.vfs.base import PathEscapeError, PathNotFoundError, TransientError
from aftd.vfs.ftp import FtpVfs
from aftd.vfs.handle import VfsHandle
from aftd.vfs.registry import VfsPool
from tests.fixtures.ftp import FtpServer, start_pyftpdlib, start_vsftpd
from tests.vfs.conftest import DictSecrets, make_pool, stat_error
from tests.vfs.ftp_fixtures import (
    MiB,
    ftp,
    ftp_server,
    own_server,
    pool_for,
    put_remote,
    started,
)

__all__ = ["ftp", "ftp_server", "own_server"]  # fixtures, for pytest


@pytest.fixture(scope="module")
def plain_ftp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FtpServer]:
    """pyftpdlib without TLS at all."""
    yield from started(start_pyftpdlib, tmp_path_factory.mktemp("plain"), tls=False)


@pytest.fixture(scope="module")
def bare_ftps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FtpServer]:
    """pyftpdlib without EPSV, MLST/MLSD and MFMT: PASV, LIST parsing, no way to set mtimes."""
    yield from started(start_pyftpdlib, tmp_path_factory.mktemp("bare"),
                       disable=["EPSV", "MLST", "MLSD", "MFMT"])


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
    await stat_error(pool, "f", match=r"TLS certificate of 127\.0\.0\.1:\d+ is not "
                                      r"trusted: certificate not trusted")


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
    yield from started(start_vsftpd, tmp_path_factory.mktemp("implicit"), implicit=True)


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
    yield from started(start_pyftpdlib, tmp_path_factory.mktemp("redirect"),
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
