"""The Azure Blob and GCS backends against their emulators (Azurite, fake-gcs-server): copies
both ways with verification at the destination, cancel half-way, a server killed mid-transfer,
wrong credentials, unknown containers and buckets, server-side copies, overwrite policies."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from pathlib import Path

import pytest

from aftd.errors import TransferError
from aftd.vfs.base import PathExistsError, PathNotFoundError, StreamDigests
from aftd.vfs.handle import VfsHandle
from tests.vfs.blob_fixtures import PREFIX, BlobStore, Bytes, blob_store
from tests.vfs.conftest import make_pool, progress_to

__all__ = ["blob_store"]  # fixtures, for pytest (servers: tests/vfs/conftest.py)

MIB = 1 << 20
# What verify="sha256" reports per backend: the MD5s the server checked or computed.
VERIFIED = {"azure": {"server-block-md5", "server-md5"}, "gcs": {"server-md5"}}


def write(base: Path, rel: str, data: bytes, mtime: float = 1_650_000_000.25) -> Path:
    path = base / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))
    return path


@pytest.mark.parametrize("size", [0, 1000, 3 * MIB + 17], ids=["empty", "one-request", "chunked"])
async def test_copy_up_and_down_verified_with_mtime(blob_store: BlobStore, size: int) -> None:
    s = blob_store
    data = os.urandom(size)
    write(s.local, "in/f.bin", data)
    l1, obj = VfsHandle(s.pool.get("l1")), s.pool.get("obj")
    up = await l1.copy_to("in/f.bin", obj, "up", verify="sha256")
    digest = hashlib.sha256(data).hexdigest()
    assert up.checksums == {"up/f.bin": digest}
    assert up.verified_by["up/f.bin"] in VERIFIED[s.kind]
    info = await obj.stat("up/f.bin")
    assert (info.size, info.mtime, info.is_dir) == (size, 1_650_000_000.25, False)
    listed = await obj.listdir("up")
    assert [(e.name, e.size, e.mtime) for e in listed] == [("f.bin", size, 1_650_000_000.25)]
    assert await s.names() == [f"{PREFIX}up/f.bin"]

    down = await VfsHandle(obj).copy_to("up/f.bin", s.pool.get("l1"), "back", verify="sha256")
    back = s.local / "back" / "f.bin"
    assert back.read_bytes() == data and back.stat().st_mtime == 1_650_000_000.25
    assert down.checksums == {"back/f.bin": digest}


@pytest.mark.parametrize("size", [3 * MIB, 20 * MIB + 5], ids=["3MiB", "20MiB"])
async def test_default_sizes_stream_up_and_down(blob_store: BlobStore, size: int) -> None:
    """The configured defaults (8 MiB blocks, 16 MiB chunks): bodies over 1 MiB go to aiohttp
    as streams (raw bytes would make it warn, an error under this suite's warning filter)."""
    s = blob_store
    s.build(**({"block_size_mib": 8, "read_chunk_mib": 8} if s.kind == "azure"
               else {"chunk_size_mib": 16}))
    data = os.urandom(size)
    write(s.local, "d.bin", data)
    obj = s.pool.get("obj")
    up = await VfsHandle(s.pool.get("l1")).copy_to("d.bin", obj, "", verify="sha256")
    assert up.verified_by == {"d.bin": "server-block-md5" if s.kind == "azure" else "server-md5"}
    down = await VfsHandle(obj).copy_to("d.bin", s.pool.get("l1"), "back", verify="sha256")
    assert down.checksums == {"back/d.bin": hashlib.sha256(data).hexdigest()}
    assert (s.local / "back" / "d.bin").read_bytes() == data


async def test_ranged_read_from_an_offset(blob_store: BlobStore) -> None:
    data = os.urandom(5 * MIB + 3)
    obj = blob_store.pool.get("obj")
    async with obj.open_write("r.bin") as w:
        await w.write(data)
    for offset in (0, 1, 4 * MIB + 11, len(data)):
        out = bytearray()
        async with obj.open_read("r.bin", offset) as r:
            while chunk := await r.read():
                out += chunk
        assert bytes(out) == data[offset:], offset


async def test_tree_copy_and_rclone_like_directories(blob_store: BlobStore) -> None:
    files = {f"t/d{i % 3}/f{i}.txt": os.urandom(100 + i) for i in range(30)}
    for rel, data in files.items():
        write(blob_store.local, rel, data)
    obj = blob_store.pool.get("obj")
    await obj.makedirs("empty/dir")  # a no-op that succeeds
    res = await VfsHandle(blob_store.pool.get("l1")).copy_to("t", obj, "", verify="sha256")
    assert (res.files, res.failed) == (30, [])
    assert {e.name for e in await obj.listdir("")} == {"t"}  # "empty" never existed
    assert {(e.name, e.is_dir) for e in await obj.listdir("t")} == {
        ("d0", True), ("d1", True), ("d2", True)}
    assert (await obj.stat("t/d1")).is_dir
    back = await VfsHandle(obj).copy_to("t", blob_store.pool.get("l1"), "back")
    assert back.files == 30
    for rel, data in files.items():
        assert (blob_store.local / "back" / rel).read_bytes() == data


async def test_overwrite_policies(blob_store: BlobStore) -> None:
    l1, obj = VfsHandle(blob_store.pool.get("l1")), blob_store.pool.get("obj")
    write(blob_store.local, "f.txt", b"first", mtime=1_000_000)
    await l1.copy_to("f.txt", obj, "")
    write(blob_store.local, "f.txt", b"second!", mtime=900_000)
    with pytest.raises(PathExistsError, match="overwrite policy 'never'"):
        await l1.copy_to("f.txt", obj, "")
    assert (await l1.copy_to("f.txt", obj, "", overwrite="if_newer")).skipped == 1
    assert (await l1.copy_to("f.txt", obj, "", overwrite="if_size_differs")).files == 1
    assert (await l1.copy_to("f.txt", obj, "", overwrite="if_size_differs")).skipped == 1
    write(blob_store.local, "f.txt", b"third!!", mtime=2_000_000)
    assert (await l1.copy_to("f.txt", obj, "", overwrite="if_newer")).files == 1
    async with obj.open_read("f.txt") as r:
        assert await r.read() == b"third!!"
    assert (await obj.stat("f.txt")).mtime == 2_000_000


async def test_server_side_copy_within_the_account(blob_store: BlobStore) -> None:
    data = os.urandom(2 * MIB + 5)
    obj, obj2 = blob_store.pool.get("obj"), blob_store.pool.get("obj2")
    write(blob_store.local, "s/a.bin", data, mtime=1_600_000_000)
    write(blob_store.local, "s/b.bin", b"b", mtime=1_600_000_000)
    await VfsHandle(blob_store.pool.get("l1")).copy_to("s", obj, "")
    res = await VfsHandle(obj).copy_to("s", obj2, "copied", verify="sha256")
    assert (res.files, res.server_side) == (2, 2)
    assert res.checksums["copied/s/a.bin"] == hashlib.sha256(data).hexdigest()
    assert await blob_store.names(1) == [f"{PREFIX}copied/s/a.bin", f"{PREFIX}copied/s/b.bin"]
    info = await obj2.stat("copied/s/a.bin")
    assert (info.size, info.mtime) == (len(data), 1_600_000_000)
    await obj.rename("s/b.bin", "s/c.bin")  # a server-side copy and a delete
    assert {e.name for e in await obj.listdir("s")} == {"a.bin", "c.bin"}


async def test_server_side_copy_into_a_vfs_not_yet_connected(blob_store: BlobStore) -> None:
    obj = blob_store.pool.get("obj")
    async with obj.open_write("x.bin") as w:
        await w.write(b"xyz")
    s = blob_store
    fresh = make_pool({"obj": s.entry(s.buckets[0]), "obj2": s.entry(s.buckets[1])},
                      s.secrets)  # a new pool: its obj2 has made no request yet
    try:
        size = await fresh.get("obj2").copy_from(fresh.get("obj"), "x.bin", "y.bin", mtime=None)
    finally:
        await fresh.aclose()
    assert size == 3


async def test_set_mtime_in_place(blob_store: BlobStore) -> None:
    obj = blob_store.pool.get("obj")
    async with obj.open_write("m.txt") as w:
        await w.write(b"m")
    await obj.set_mtime("m.txt", 1_234_567_890.5)
    assert (await obj.stat("m.txt")).mtime == 1_234_567_890.5
    with pytest.raises(PathNotFoundError):
        await obj.set_mtime("nope.txt", 1.0)


async def test_verify_detects_a_wrong_digest(blob_store: BlobStore) -> None:
    obj = blob_store.pool.get("obj")
    data = b"x" * 1000
    async with obj.open_write("v.bin") as w:
        await w.write(data)
        await w.finish(None)
        receipt = w.receipt  # type: ignore[attr-defined]
    good = StreamDigests(hashlib.sha256(data).hexdigest(), len(data),
                         {"md5": hashlib.md5(data).hexdigest()})  # noqa: S324
    assert await obj.verify_stored("v.bin", good, receipt) in VERIFIED[blob_store.kind]
    wrong_md5 = "0" * 32
    if blob_store.kind == "azure":  # the receipt carries the MD5 the upload streamed
        bad_receipt = {**receipt, "md5": wrong_md5}
        with pytest.raises(TransferError, match="md5 mismatch"):
            await obj.verify_stored("v.bin", good, bad_receipt)
    else:
        bad = StreamDigests(good.sha256, good.size, {"md5": wrong_md5})
        with pytest.raises(TransferError, match="md5 mismatch"):
            await obj.verify_stored("v.bin", bad, receipt)


async def test_cancel_half_way_leaves_nothing(blob_store: BlobStore) -> None:
    write(blob_store.local, "big.bin", os.urandom(24 * MIB))
    obj = blob_store.pool.get("obj")
    sink = Bytes()
    with progress_to(sink):
        task = asyncio.create_task(
            VfsHandle(blob_store.pool.get("l1")).copy_to("big.bin", obj, "", verify="sha256"))
    while sink.done < 3 * MIB and not task.done():
        await asyncio.sleep(0.01)
    assert not task.done(), "the copy finished before it could be cancelled"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sink.done < 24 * MIB
    assert await blob_store.names() == []
    with pytest.raises(PathNotFoundError):
        await obj.stat("big.bin")


async def test_failed_source_mid_upload_publishes_nothing(blob_store: BlobStore) -> None:
    path = write(blob_store.local, "shrinks.bin", os.urandom(6 * MIB))
    obj = blob_store.pool.get("obj")

    class Shrinking:  # the source file is truncated while it is read
        mtime = None

        def __init__(self, inner: object) -> None:
            self.inner, self.n = inner, 0

        async def read(self) -> bytes:
            self.n += 1
            if self.n == 3:
                os.truncate(path, 1000)
            return await self.inner.read()  # type: ignore[attr-defined, no-any-return]

    src = blob_store.pool.get("l1")
    real = src.open_read

    @contextlib.asynccontextmanager
    async def shrinking(p: str, offset: int = 0):  # type: ignore[no-untyped-def]
        async with real(p, offset) as r:
            yield Shrinking(r)

    src.open_read = shrinking  # type: ignore[method-assign]
    with pytest.raises(TransferError, match=r"source changed|size check"):
        await VfsHandle(src).copy_to("shrinks.bin", obj, "")
    assert await blob_store.names() == []


async def test_unknown_container_or_bucket_is_named(blob_store: BlobStore) -> None:
    name = "no-such-bucket-here"
    pool = blob_store.build()  # a fresh pool, with one more entry
    entries = {"missing": blob_store.entry(name)}
    from tests.vfs.conftest import make_pool

    bad = make_pool(entries, blob_store.secrets).get("missing")
    try:
        for op in (lambda: bad.stat("x"), lambda: bad.listdir(""),
                   lambda: _put(bad, "x", b"1")):
            with pytest.raises(TransferError) as ei:
                await op()
            assert f"'{name}' does not exist" in str(ei.value)
            assert "vfs 'missing'" in str(ei.value)
            assert not isinstance(ei.value, PathNotFoundError)
    finally:
        await bad.aclose()
        await pool.aclose()


async def _put(vfs: object, path: str, data: bytes) -> None:
    async with vfs.open_write(path) as w:  # type: ignore[attr-defined]
        await w.write(data)


@pytest.mark.parametrize("bad", ["../x", "a/../../x", "/abs", "a\\b", "a%2Fb", "a/%2e%2e/b"])
async def test_paths_are_confined(blob_store: BlobStore, bad: str) -> None:
    from aftd.vfs.base import PathEscapeError

    obj = blob_store.pool.get("obj")
    with pytest.raises(PathEscapeError):
        await _put(obj, bad, b"x")
    with pytest.raises(PathEscapeError):
        await obj.stat(bad)
    assert await blob_store.names() == []
