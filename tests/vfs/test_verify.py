"""verify="sha256" checks what the destination stored, and the result says how (verified_by):
local destinations are read back, SFTP runs sha256sum on the server over an exec channel and
reads back where the server will not (or its answer cannot be trusted)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import structlog

from aftd.errors import TransferError
from aftd.vfs.base import WriteStream
from aftd.vfs.copy import CopyResult
from aftd.vfs.handle import VfsHandle
from aftd.vfs.local import LocalVfs
from aftd.vfs.registry import VfsPool
from tests.fixtures.sshd import SshdServer
from tests.vfs.conftest import DictSecrets, make_pool

ZEROS = "0" * 64


def tree(base: Path, n: int) -> dict[str, bytes]:
    files = {}
    for i in range(n):
        data = os.urandom(1000 + i)
        (base / "t" / f"f{i}.bin").parent.mkdir(parents=True, exist_ok=True)
        (base / "t" / f"f{i}.bin").write_bytes(data)
        files[f"t/f{i}.bin"] = data
    return files


def sftp_pool(tmp_path: Path, sshd: SshdServer, **opts: Any) -> VfsPool:
    (tmp_path / "local").mkdir(exist_ok=True)
    remote = sshd.root / f"v-{tmp_path.name}"
    remote.mkdir(exist_ok=True)
    return make_pool({"local": {"type": "local", "root": str(tmp_path / "local")},
                      "remote": sshd.vfs_options(root=str(remote), **opts)},
                     DictSecrets({"sshd-key": sshd.user_key_text}))


async def test_local_destination_is_read_back(pool: VfsPool) -> None:
    files = tree(Path(pool.get("l1").root), 3)  # type: ignore[attr-defined]
    res = await VfsHandle(pool.get("l1")).copy_to("t", pool.get("l2"), "", verify="sha256")
    assert res.verified_by == dict.fromkeys(files, "read-back")
    assert res.verified_by_summary == {"read-back": 3}
    assert res.checksums == {p: hashlib.sha256(d).hexdigest() for p, d in files.items()}
    assert res.as_dict()["verified_by_summary"] == {"read-back": 3}


async def test_no_verify_no_verified_by(pool: VfsPool) -> None:
    tree(Path(pool.get("l1").root), 2)  # type: ignore[attr-defined]
    res = await VfsHandle(pool.get("l1")).copy_to("t", pool.get("s1"), "")
    assert (res.verified_by, res.checksums, res.server_side) == ({}, {}, 0)


async def test_sftp_destination_hashes_on_the_server(pool: VfsPool) -> None:
    files = tree(Path(pool.get("l1").root), 4)  # type: ignore[attr-defined]
    res = await VfsHandle(pool.get("l1")).copy_to("t", pool.get("s1"), "", verify="sha256")
    assert res.verified_by == dict.fromkeys(files, "remote-sha256")
    assert res.checksums == {p: hashlib.sha256(d).hexdigest() for p, d in files.items()}


async def _upload(tmp_path: Path, sshd_a: SshdServer, command: str, n: int,
                  ) -> tuple[dict[str, bytes], CopyResult, list[dict[str, Any]]]:
    """``n`` files copied to SFTP with verify="sha256" and ``sha256sum_command = command``:
    the files, the result and what was logged."""
    pool = sftp_pool(tmp_path, sshd_a, sha256sum_command=command)
    try:
        files = tree(tmp_path / "local", n)
        with structlog.testing.capture_logs() as logs:
            res = await VfsHandle(pool.get("local")).copy_to("t", pool.get("remote"), "",
                                                             verify="sha256")
    finally:
        await pool.aclose()
    return files, res, logs


@pytest.mark.parametrize("command", ["", "no-such-sha256sum"])
async def test_sftp_without_the_command_reads_back(tmp_path: Path, sshd_a: SshdServer,
                                                   command: str) -> None:
    files, res, logs = await _upload(tmp_path, sshd_a, command, 3)
    assert res.verified_by == dict.fromkeys(files, "read-back")
    gave_up = [e for e in logs if e["event"] == "sftp_remote_hash_unavailable"]
    assert len(gave_up) == (1 if command else 0)  # logged once, then not tried again


async def test_sftp_remote_digest_that_disagrees_is_checked_by_read_back(
        tmp_path: Path, sshd_a: SshdServer) -> None:
    # A command that answers a wrong digest (a chrooted session's shell could hash another file):
    # the read-back agrees with what was sent, so the copy succeeds and the command is dropped.
    files, res, logs = await _upload(tmp_path, sshd_a, f"f() {{ echo '{ZEROS}  x'; }}; f", 2)
    assert res.verified_by == dict.fromkeys(files, "read-back")
    [gave_up] = [e for e in logs if e["event"] == "sftp_remote_hash_unavailable"]
    assert "disagreed" in gave_up["reason"]


class _Flipping:
    """A writer that stores one byte wrong: the disk of a destination that corrupts data."""

    receipt = None

    def __init__(self, inner: WriteStream) -> None:
        self.inner, self.first = inner, True

    @property
    def confirmed(self) -> int:
        return self.inner.confirmed

    async def write(self, data: bytes) -> None:
        if self.first and data:
            data, self.first = bytes([data[0] ^ 1]) + data[1:], False
        await self.inner.write(data)

    async def flush(self) -> None:
        await self.inner.flush()

    async def finish(self, mtime: float | None) -> int:
        return await self.inner.finish(mtime)


class CorruptingLocal(LocalVfs):
    @asynccontextmanager
    async def open_write(self, path: str, offset: int = 0, *, mtime: float | None = None,
                         size: int | None = None, verify: bool = False,
                         ) -> AsyncIterator[WriteStream]:
        async with super().open_write(path, offset, mtime=mtime, size=size, verify=verify) as w:
            yield _Flipping(w)


async def test_a_destination_that_stored_other_bytes_fails_and_keeps_nothing(
        pool: VfsPool, tmp_path: Path) -> None:
    src = pool.get("s1")  # streamed (a local source would take the kernel-copy path)
    base = Path(src._root_cfg)  # type: ignore[attr-defined]
    (base / "f.bin").write_bytes(os.urandom(100_000))
    dst = CorruptingLocal("bad", str(tmp_path / "bad"))
    (tmp_path / "bad").mkdir()
    with pytest.raises(TransferError, match=r"'bad'.*'f\.bin'.*sha256 mismatch: sent [0-9a-f]{64}, "
                                            r"stored [0-9a-f]{64}"):
        await VfsHandle(src).copy_to("f.bin", dst, "", verify="sha256")
    assert list((tmp_path / "bad").iterdir()) == []  # neither the file nor its temporary name
    res = await VfsHandle(src).copy_to("f.bin", dst, "")  # unverified: the size still matches
    assert (res.files, res.verified_by) == (1, {})
