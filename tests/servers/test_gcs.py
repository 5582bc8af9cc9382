"""fake-gcs-server driven by gcloud-aio-storage (and raw JSON API calls where the library has no
call): the operations a GCS backend needs (summary and quirks in tests/fixtures/gcs.py)."""

from __future__ import annotations

import base64
import hashlib
import os
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest
from gcloud.aio.storage import Storage

from tests.fixtures.gcs import GcsServer

CHUNK = 256 * 1024  # resumable chunks are multiples of 256 KiB


def crc32c(data: bytes) -> str:
    """CRC32C (Castagnoli) as GCS reports it: base64 of the big-endian 32-bit value."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return base64.b64encode((crc ^ 0xFFFFFFFF).to_bytes(4, "big")).decode()


def md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()  # noqa: S324 - GCS's md5Hash


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def storage(fake_gcs: GcsServer, http: aiohttp.ClientSession) -> Storage:
    return Storage(session=http, api_root=fake_gcs.endpoint)


@pytest.fixture
def bucket(fake_gcs: GcsServer) -> str:
    name = f"t-{uuid.uuid4().hex[:20]}"
    fake_gcs.create_bucket(name)
    return name


async def test_emulator_host_variable_is_honoured(fake_gcs: GcsServer, bucket: str,
                                                  http: aiohttp.ClientSession,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake_gcs.endpoint)
    storage = Storage(session=http)
    await storage.upload(bucket, "env.txt", b"via env")
    assert await storage.download(bucket, "env.txt") == b"via env"


async def test_uploads_report_md5_and_crc32c(storage: Storage, bucket: str) -> None:
    data = os.urandom(300_000)
    simple = await storage.upload(bucket, "dir/simple.bin", data, force_resumable_upload=False,
                                  metadata={"metadata": {"mtime": "1700000000.5"}})
    resumable = await storage.upload(bucket, "dir/resumable.bin", data,
                                     force_resumable_upload=True)
    for meta in (simple, resumable):
        assert int(meta["size"]) == len(data)
        assert meta["md5Hash"] == md5(data) and meta["crc32c"] == crc32c(data)
    assert simple["metadata"] == {"mtime": "1700000000.5"}
    # A client-claimed md5Hash is ignored: the server reports what it stored.
    claimed = await storage.upload(bucket, "claimed.bin", b"abc",
                                   metadata={"md5Hash": base64.b64encode(b"\0" * 16).decode()})
    assert claimed["md5Hash"] == md5(b"abc")


async def test_chunked_resumable_upload_and_cancel(fake_gcs: GcsServer, bucket: str,
                                                   http: aiohttp.ClientSession,
                                                   storage: Storage) -> None:
    url = f"{fake_gcs.endpoint}/upload/storage/v1/b/{bucket}/o?uploadType=resumable"
    data = os.urandom(3 * CHUNK + 1000)
    async with http.post(url, json={"name": "chunked.bin", "metadata": {"mtime": "1"}}) as resp:
        assert resp.status == 200
        session_uri = resp.headers["Location"]
    for offset in range(0, len(data), 2 * CHUNK):
        part = data[offset:offset + 2 * CHUNK]
        last = offset + len(part) == len(data)
        total = str(len(data)) if last else "*"
        headers = {"Content-Range": f"bytes {offset}-{offset + len(part) - 1}/{total}"}
        async with http.put(session_uri, data=part, headers=headers) as resp:
            if last:
                assert resp.status == 200
                meta = await resp.json()
            else:
                assert resp.status == 308
                assert resp.headers["Range"] == f"bytes=0-{offset + len(part) - 1}"
    assert int(meta["size"]) == len(data)
    assert meta["md5Hash"] == md5(data) and meta["crc32c"] == crc32c(data)

    async with http.post(url, json={"name": "cancelled.bin"}) as resp:
        cancelled_uri = resp.headers["Location"]
    async with http.put(cancelled_uri, data=data[:CHUNK],
                        headers={"Content-Range": f"bytes 0-{CHUNK - 1}/*"}) as resp:
        assert resp.status == 308
    async with http.delete(cancelled_uri) as resp:
        assert resp.status == 499
    listing = await storage.list_objects(bucket)
    assert [item["name"] for item in listing["items"]] == ["chunked.bin"]


async def test_ranged_download_listing_and_rewrite(storage: Storage, bucket: str) -> None:
    data = os.urandom(100_000)
    await storage.upload(bucket, "dir/a.bin", data, metadata={"metadata": {"mtime": "7"}})
    await storage.upload(bucket, "dir/sub/x.txt", b"x")
    await storage.upload(bucket, "top.txt", b"t")
    part = await storage.download(bucket, "dir/a.bin", headers={"Range": "bytes=100-199"})
    assert part == data[100:200]

    root = await storage.list_objects(bucket, params={"delimiter": "/"})
    assert [i["name"] for i in root["items"]] == ["top.txt"] and root["prefixes"] == ["dir/"]
    sub = await storage.list_objects(bucket, params={"delimiter": "/", "prefix": "dir/"})
    assert [i["name"] for i in sub["items"]] == ["dir/a.bin"]
    assert sub["prefixes"] == ["dir/sub/"]

    done = await storage.copy(bucket, "dir/a.bin", bucket, new_name="copy.bin")
    assert done["done"] is True
    meta = await storage.download_metadata(bucket, "copy.bin")
    assert meta["md5Hash"] == md5(data) and meta["crc32c"] == crc32c(data)
    assert meta["metadata"] == {"mtime": "7"}


async def test_unknown_bucket_is_404(storage: Storage) -> None:
    with pytest.raises(aiohttp.ClientResponseError) as info:
        await storage.download("no-such-bucket-here", "x")
    assert info.value.status == 404


async def test_killed_server_restarts_with_its_objects(fake_gcs: GcsServer, bucket: str,
                                                       storage: Storage) -> None:
    await storage.upload(bucket, "survivor.txt", b"still here")
    try:
        fake_gcs.kill()
        with pytest.raises(aiohttp.ClientConnectionError):
            await storage.download(bucket, "survivor.txt")
        fake_gcs.start()
        assert await storage.download(bucket, "survivor.txt") == b"still here"
    finally:
        fake_gcs.start()
