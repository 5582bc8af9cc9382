"""FTP/FTPS transfers against real servers (vsftpd and pyftpdlib): mtimes and policies,
server-side hashes, parallel ranged downloads, failures half-way, local disk on the transfer's
thread, and copies between backends. The rest of the FTP behaviour is in test_ftp.py."""

from __future__ import annotations

import asyncio
import hashlib
import os
import resource
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from aftd.errors import TransferError
from aftd.vfs import copy_file
from aftd.vfs.base import PathExistsError
from aftd.vfs.copy import CopyResult
from aftd.vfs.ftp import FtpVfs
from aftd.vfs.handle import VfsHandle
from aftd.vfs.registry import VfsPool
from tests.fixtures.ftp import FtpServer, start_pyftpdlib
from tests.vfs.conftest import At, progress_to
from tests.vfs.ftp_fixtures import (
    MiB,
    debris,
    ftp,
    ftp_server,
    own_server,
    pool_for,
    put_remote,
    started,
)

__all__ = ["ftp", "ftp_server", "own_server"]  # fixtures, for pytest


@pytest.fixture(scope="module")
def hashing_ftps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FtpServer]:
    """pyftpdlib with HASH and XSHA256."""
    yield from started(start_pyftpdlib, tmp_path_factory.mktemp("hash"), hash=True)


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
