"""What every backend of the copy matrix does when things go wrong (tests/vfs/backends.py):

* a copy cancelled half-way leaves nothing: no file, no temporary name, no incomplete upload;
* the server killed mid-transfer and started again: the copy fails cleanly or resumes, and the
  result is either the whole file or nothing;
* wrong credentials: a clear error that shows neither the wrong value nor the right one;
* a bucket or container that does not exist: an error naming it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from aftd.errors import AftdError, TransferError
from aftd.jobs.model import Progress
from aftd.vfs.base import PathNotFoundError, Vfs, read_back_sha256
from aftd.vfs.copy import CopyResult
from aftd.vfs.handle import VfsHandle
from tests.vfs.backends import MATRIX, BackendTarget
from tests.vfs.conftest import At, progress_to, target_of, target_vfs

BIG = 64 << 20
LOCAL_SRC = BackendTarget("local", {"type": "local", "root": ""}, {})


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    d = tmp_path_factory.mktemp("failures")
    block = os.urandom(1 << 20)
    data = b"".join(i.to_bytes(4, "big") + block[4:] for i in range(BIG >> 20))
    (d / "big.bin").write_bytes(data)
    return d, hashlib.sha256(data).hexdigest()


def stepping(target: BackendTarget) -> BackendTarget:
    """The target with small upload steps, so half-way is reached while parts are in flight."""
    return BackendTarget(target.id, {**target.entry, **target.small_steps}, target.secrets,
                         server=target.server, persist=target.persist)


def local_at(d: Path) -> BackendTarget:
    return BackendTarget("local", {"type": "local", "root": str(d)}, {})


async def names_in(vfs: Vfs, path: str) -> list[str]:
    try:
        return sorted(e.name for e in await vfs.listdir(path))
    except PathNotFoundError:
        return []


async def copy_with(sink: Progress, src: Vfs, path: str, dst: Vfs, dst_dir: str,
                    ) -> asyncio.Task[CopyResult]:
    with progress_to(sink):
        return asyncio.create_task(VfsHandle(src).copy_to(path, dst, dst_dir, verify="sha256"))


@pytest.mark.parametrize("backend", MATRIX)
async def test_cancel_half_way_leaves_nothing(request: pytest.FixtureRequest, backend: str,
                                              big: tuple[Path, str]) -> None:
    target = target_of(request, backend)
    async with target_vfs(local_at(big[0]), "src") as src, \
            target_vfs(stepping(target)) as dst:
        holder: list[asyncio.Task[CopyResult]] = []
        sink = At(BIG // 2, lambda: holder[0].cancel())
        holder.append(await copy_with(sink, src, "big.bin", dst, "o"))
        with pytest.raises(asyncio.CancelledError):
            await holder[0]
        assert sink.bytes_done >= BIG // 2
        assert await names_in(dst, "o") == []  # neither the file nor a temporary name
        assert await target.leftovers() == []  # nor an incomplete multipart upload


def _crash_and_restart(target: BackendTarget) -> asyncio.TimerHandle:
    """Kill the server now (its connections drop at once); start it again a second later.
    The start runs on the test's own thread: a server started from a short-lived thread would
    die with it (the fixtures' servers get SIGKILL when the thread that forked them ends)."""
    assert target.server is not None
    target.server.kill()
    return asyncio.get_running_loop().call_later(1.0, target.server.start)


# S3 on rclone serve s3: a SeaweedFS killed with SIGKILL serves its stored objects again only
# after its volume server has re-registered, which takes tens of seconds on a loaded machine
# (longer than any retry should wait), so the crash runs against the S3 server that restarts
# at once; it loses in-flight multipart uploads, which the upload must survive.
CRASH = ["sftp", "ftps", "s3", "s3-rclone", "azure", "gcs"]


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("direction", ["upload", "download"])
@pytest.mark.parametrize("backend", CRASH)
async def test_server_killed_mid_transfer_then_restarted(
        request: pytest.FixtureRequest, backend: str, direction: str,
        big: tuple[Path, str], tmp_path: Path) -> None:
    target = target_of(request, backend)
    src_dir, digest = big
    restarts: list[asyncio.TimerHandle] = []
    try:
        async with target_vfs(local_at(src_dir), "local") as local, \
                target_vfs(stepping(target)) as remote:
            if direction == "download":
                await VfsHandle(local).copy_to("big.bin", remote, "")
                (tmp_path / "down").mkdir()
            if target.persist is not None:
                target.persist()  # the bucket (and the download's source) survive the crash
            async with target_vfs(local_at(tmp_path / "down"), "down") as down:
                src, dst = (local, remote) if direction == "upload" else (remote, down)
                sink = At(BIG // 4, lambda: restarts.append(_crash_and_restart(target)))
                task = await copy_with(sink, src, "big.bin", dst, "o")
                [outcome] = await asyncio.gather(task, return_exceptions=True)
                for handle in restarts:  # the server is back before we look at what it holds
                    handle.cancel()
                assert target.server is not None
                target.server.start()  # (if the restart has not happened yet)
                if isinstance(outcome, TransferError):  # a clean failure: nothing left
                    assert f"'{remote.name}'" in str(outcome), outcome
                    assert await names_in(dst, "o") == []
                else:  # or it resumed: the whole file, verified
                    assert isinstance(outcome, CopyResult), outcome
                    assert outcome.checksums == {"o/big.bin": digest}
                    assert await read_back_sha256(dst, "o/big.bin") == digest
                assert sink.fired
        # Closing the pool aborted any upload the crash had orphaned.
        assert await target.leftovers() == []
    finally:
        if target.server is not None:
            target.server.start()  # whatever happened, leave the session's server running


@pytest.mark.parametrize("backend", MATRIX)
async def test_wrong_credentials_are_a_clear_error_without_secrets(
        request: pytest.FixtureRequest, backend: str) -> None:
    target = target_of(request, backend)
    if target.bad_secrets is None:
        pytest.skip("no credentials")
    async with target_vfs(target, secrets=target.bad_secrets) as vfs:
        with pytest.raises(AftdError) as ei:
            await vfs.listdir("")
        with pytest.raises(AftdError) as ei2:
            async with vfs.open_write("x.txt") as w:
                await w.write(b"x")
    for err in (ei.value, ei2.value):
        text = str(err)
        assert f"'{vfs.name}'" in text and ("refused" in text or "authentication" in text), text
        assert target.bad_value not in text and target.bad_value[:16] not in text
        for real in target.secrets.values():
            assert real not in text and real[:16] not in text


@pytest.mark.parametrize("backend", MATRIX)
async def test_unknown_bucket_is_named(request: pytest.FixtureRequest, backend: str) -> None:
    target = target_of(request, backend)
    if target.unknown_container is None:
        pytest.skip("no buckets or containers")
    bucket = next(v for k, v in target.unknown_container.items() if k in ("bucket", "container"))
    gone = BackendTarget(target.id, target.unknown_container, target.secrets)
    async with target_vfs(gone) as vfs:
        for op in (vfs.stat(""), vfs.listdir("x"), vfs.stat("x/y.txt")):
            with pytest.raises(TransferError, match=rf"'{vfs.name}'.*{bucket}.*does not exist"):
                await op
        with pytest.raises(TransferError, match=rf"{bucket}.*does not exist"):
            async with vfs.open_write("x.txt") as w:
                await w.write(b"x")
