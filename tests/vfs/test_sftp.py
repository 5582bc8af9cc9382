"""SFTP-specific behaviour: host keys, secrets at connect time, pooling, a server that dies."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from aftd.errors import SecretError, TransferError
from aftd.vfs import copy_file
from aftd.vfs.copy import CopyResult
from aftd.vfs.handle import VfsHandle
from aftd.vfs.sftp import SftpVfs
from tests.fixtures.sshd import SshdServer
from tests.vfs.conftest import At, DictSecrets, make_pool, progress_to, stat_error


def sftp_pool(srv: SshdServer, tmp: Path, secrets: DictSecrets | None = None, **opts: object):
    entries = {"s": srv.vfs_options(**opts), "l": {"type": "local", "root": str(tmp)}}
    return make_pool(entries, secrets or DictSecrets({"sshd-key": srv.user_key_text}))


async def test_unknown_host_key_is_refused_with_offered_fingerprint(
        sshd_a: SshdServer, sshd_b: SshdServer, tmp_path: Path) -> None:
    pool = sftp_pool(sshd_a, tmp_path, known_hosts=str(sshd_b.known_hosts))
    msg = str(await stat_error(pool, "s"))
    assert "not trusted" in msg
    assert sshd_a.host_key_sha256 in msg
    assert "'s'" in msg


async def test_pinned_fingerprint_accepts_match_and_refuses_mismatch(
        sshd_a: SshdServer, sshd_b: SshdServer, tmp_path: Path) -> None:
    good = sftp_pool(sshd_a, tmp_path, known_hosts="", host_key_sha256=sshd_a.host_key_sha256)
    bad = sftp_pool(sshd_a, tmp_path, known_hosts="", host_key_sha256=sshd_b.host_key_sha256)
    try:
        assert (await good.get("s").stat("")).is_dir
        with pytest.raises(TransferError, match=sshd_a.host_key_sha256.replace("+", r"\+")):
            await bad.get("s").stat("")
    finally:
        await good.aclose()
        await bad.aclose()


async def test_wrong_user_key_is_refused_without_leaking_it(sshd_a: SshdServer,
                                                            sshd_b: SshdServer,
                                                            tmp_path: Path) -> None:
    pool = sftp_pool(sshd_a, tmp_path, DictSecrets({"sshd-key": sshd_b.user_key_text}))
    try:
        with pytest.raises(TransferError, match=r"authentication .* refused") as ei:
            await pool.get("s").stat("")
    finally:
        await pool.aclose()
    assert "PRIVATE KEY" not in str(ei.value)


async def test_unusable_key_secret_names_the_secret_only(sshd_a: SshdServer,
                                                         tmp_path: Path) -> None:
    pool = sftp_pool(sshd_a, tmp_path, DictSecrets({"sshd-key": "not-a-key hunter2"}))
    try:
        with pytest.raises(SecretError, match="'sshd-key'") as ei:
            await pool.get("s").stat("")
    finally:
        await pool.aclose()
    assert "hunter2" not in str(ei.value)


async def test_secrets_are_resolved_at_connect_time(sshd_a: SshdServer, tmp_path: Path) -> None:
    secrets = DictSecrets({})
    pool = sftp_pool(sshd_a, tmp_path, secrets)  # building the VFS needs no secret yet
    vfs = pool.get("s")
    assert secrets.calls == []
    with pytest.raises(SecretError, match="sshd-key"):
        await vfs.stat("")
    secrets.values["sshd-key"] = sshd_a.user_key_text  # "rotated in": the next connect uses it
    try:
        assert (await vfs.stat("")).is_dir
    finally:
        await pool.aclose()
    assert secrets.calls == ["sshd-key", "sshd-key"]


async def test_connections_are_shared_and_bounded(sshd_a: SshdServer, tmp_path: Path) -> None:
    pool = sftp_pool(sshd_a, tmp_path, max_connections=2, max_sessions=2)
    vfs = pool.get("s")
    assert isinstance(vfs, SftpVfs)
    (sshd_a.root / "f").write_bytes(os.urandom(2_000_000))
    try:
        async def read_all() -> int:
            n = 0
            async with vfs.open_read("f") as r:
                while chunk := await r.read():
                    n += len(chunk)
                    await asyncio.sleep(0)
            return n

        sizes = await asyncio.gather(*(read_all() for _ in range(10)))
        assert sizes == [2_000_000] * 10
        conns = vfs.pool._conns
        assert 1 <= len(conns) <= 2
        assert all(len(c.sessions) <= 2 for c in conns)
    finally:
        await pool.aclose()


async def test_reconnects_transparently_after_server_restart(sshd_own: SshdServer,
                                                             tmp_path: Path) -> None:
    pool = sftp_pool(sshd_own, tmp_path)
    vfs = pool.get("s")
    try:
        assert (await vfs.stat("")).is_dir
        sshd_own.kill()
        sshd_own.restart()
        assert (await vfs.stat("")).is_dir  # the dead connection is replaced, no error
    finally:
        await pool.aclose()


def _kill(srv: SshdServer, restart: bool) -> None:
    srv.kill()
    if restart:
        srv.restart()


async def _copy_with_kill(srv: SshdServer, tmp_path: Path, upload: bool, restart: bool,
                          ) -> tuple[Path, str, CopyResult | BaseException]:
    data = os.urandom(1 << 20) * 40 + os.urandom(12345)  # ~40 MiB
    digest = hashlib.sha256(data).hexdigest()
    src_dir = tmp_path if upload else srv.root
    (src_dir / "f.bin").write_bytes(data)
    pool = sftp_pool(srv, tmp_path)
    src, dst = (pool.get("l"), pool.get("s")) if upload else (pool.get("s"), pool.get("l"))
    sink = At(len(data) // 3, lambda: _kill(srv, restart))
    try:
        with progress_to(sink):
            result: CopyResult | BaseException = await VfsHandle(src).copy_to(
                "f.bin", dst, "out", verify="sha256")
    except TransferError as exc:
        result = exc
    finally:
        await pool.aclose()
    assert sink.fired
    out_dir = (srv.root if upload else tmp_path) / "out"
    return out_dir, digest, result


@pytest.mark.parametrize("upload", [True, False], ids=["upload", "download"])
async def test_sshd_killed_mid_transfer_fails_cleanly(sshd_own: SshdServer, tmp_path: Path,
                                                      upload: bool,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(copy_file, "RETRY_DELAYS", (0.05, 0.1))
    out_dir, _, result = await _copy_with_kill(sshd_own, tmp_path, upload, restart=False)
    assert isinstance(result, TransferError)
    assert "'s'" in str(result)
    assert not (out_dir / "f.bin").exists()  # never a partial file under the final name
    if not upload:  # the local side could clean up its temporary file
        assert list(out_dir.iterdir()) == []


@pytest.mark.parametrize("upload", [True, False], ids=["upload", "download"])
async def test_sshd_restarted_mid_transfer_resumes(sshd_own: SshdServer, tmp_path: Path,
                                                   upload: bool) -> None:
    with capture_logs() as logs:
        out_dir, digest, result = await _copy_with_kill(sshd_own, tmp_path, upload, restart=True)
    assert isinstance(result, CopyResult), result
    retries = [e for e in logs if e["event"] == "copy_retry"]
    assert retries
    assert retries[0]["resume_at"] > 0
    assert result.checksums == {"out/f.bin": digest}
    assert hashlib.sha256((out_dir / "f.bin").read_bytes()).hexdigest() == digest
    assert [p.name for p in out_dir.iterdir()] == ["f.bin"]


async def test_empty_root_is_the_login_directory(sshd_a: SshdServer, tmp_path: Path) -> None:
    pool = sftp_pool(sshd_a, tmp_path, root="")
    try:
        vfs = pool.get("s")
        assert isinstance(vfs, SftpVfs)
        assert await vfs.root() == os.path.realpath(os.path.expanduser("~"))
    finally:
        await pool.aclose()
