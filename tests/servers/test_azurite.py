"""Azurite driven by azure-storage-blob's aio client (aiohttp transport): the operations an Azure
backend needs and how MD5s behave (summary in tests/fixtures/azurite.py)."""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError, ServiceRequestError
from azure.storage.blob import BlobBlock, ContentSettings
from azure.storage.blob.aio import BlobServiceClient, ContainerClient

from tests.fixtures.azurite import AzuriteServer

MIB = 1024 * 1024
BLOCKS = [b"a" * MIB, b"b" * MIB, b"tail" * 1000]


def block_id(n: int) -> str:
    return base64.b64encode(f"{n:08d}".encode()).decode()


@pytest.fixture
async def container(azurite: AzuriteServer) -> AsyncIterator[ContainerClient]:
    async with BlobServiceClient(azurite.account_url, credential=azurite.credential) as svc:
        client = svc.get_container_client(f"t-{uuid.uuid4().hex[:20]}")
        await client.create_container()
        yield client


async def test_wrong_account_key_is_refused(azurite: AzuriteServer) -> None:
    wrong = {"account_name": azurite.account_name,
             "account_key": base64.b64encode(b"k" * 64).decode()}
    async with BlobServiceClient(azurite.account_url, credential=wrong) as svc:
        with pytest.raises(HttpResponseError) as info:
            await svc.create_container("nope")
    assert info.value.status_code == 403


async def test_block_list_ranged_download_listing_and_copy(container: ContainerClient) -> None:
    blob = container.get_blob_client("dir/big.bin")
    for n, data in enumerate(BLOCKS):
        await blob.stage_block(block_id(n), data, validate_content=True)
    assert not await blob.exists()  # staged blocks are no blob yet
    full = b"".join(BLOCKS)
    md5 = hashlib.md5(full).digest()  # noqa: S324 - the service's integrity check is MD5
    await blob.commit_block_list([BlobBlock(block_id=block_id(n)) for n in range(len(BLOCKS))],
                                 content_settings=ContentSettings(content_md5=bytearray(md5)),
                                 metadata={"mtime": "1700000000.5"})
    props = await blob.get_blob_properties()
    assert props.size == len(full) and props.metadata == {"mtime": "1700000000.5"}
    assert bytes(props.content_settings.content_md5) == md5

    ranged = await blob.download_blob(offset=MIB - 5, length=10)
    assert await ranged.readall() == full[MIB - 5:MIB + 5]

    await container.get_blob_client("dir/sub/x.txt").upload_blob(b"x")
    await container.get_blob_client("top.txt").upload_blob(b"t")
    root = [item.name async for item in container.walk_blobs(delimiter="/")]
    assert sorted(root) == ["dir/", "top.txt"]
    sub = [item.name async for item in container.walk_blobs(name_starts_with="dir/",
                                                              delimiter="/")]
    assert sorted(sub) == ["dir/big.bin", "dir/sub/"]

    copy = container.get_blob_client("copy.bin")
    started = await copy.start_copy_from_url(blob.url, requires_sync=True)
    assert started["copy_status"] == "success"
    copied = await copy.get_blob_properties()
    assert copied.size == len(full) and bytes(copied.content_settings.content_md5) == md5


async def test_uncommitted_blocks_are_listed_and_make_no_blob(container: ContainerClient) -> None:
    blob = container.get_blob_client("abandoned.bin")
    await blob.stage_block(block_id(0), b"zz")
    committed, uncommitted = await blob.get_block_list("all")
    assert committed == [] and [b.id for b in uncommitted] == [block_id(0)]
    assert not await blob.exists()
    names = [b.name async for b in container.list_blobs()]
    assert names == []


async def test_md5_single_shot_computed_block_list_taken_as_given(
        container: ContainerClient) -> None:
    single = container.get_blob_client("single.txt")
    await single.upload_blob(b"hello")
    props = await single.get_blob_properties()
    assert bytes(props.content_settings.content_md5) == hashlib.md5(b"hello").digest()  # noqa: S324

    # A commit stores no MD5 of its own, and stores a wrong one unchecked.
    for name, claimed in (("none.bin", None), ("wrong.bin", bytearray(16))):
        blob = container.get_blob_client(name)
        await blob.stage_block(block_id(0), b"data")
        settings = ContentSettings(content_md5=claimed) if claimed else None
        await blob.commit_block_list([BlobBlock(block_id=block_id(0))], content_settings=settings)
        md5 = (await blob.get_blob_properties()).content_settings.content_md5
        assert md5 == claimed

    # The per-block transactional MD5 is checked.
    blob = container.get_blob_client("tx.bin")
    with pytest.raises(HttpResponseError):
        await blob.stage_block(block_id(1), b"data",
                               headers={"Content-MD5": base64.b64encode(b"\0" * 16).decode()})


async def test_unknown_container_is_reported(azurite: AzuriteServer) -> None:
    async with BlobServiceClient(azurite.account_url, credential=azurite.credential) as svc:
        with pytest.raises(ResourceNotFoundError) as info:
            await svc.get_container_client("no-such-container").get_blob_client("x").upload_blob(b"1")
    assert info.value.error_code == "ContainerNotFound"


async def test_killed_server_restarts(azurite: AzuriteServer) -> None:
    name = f"t-{uuid.uuid4().hex[:20]}"
    try:
        azurite.kill()
        async with BlobServiceClient(azurite.account_url, credential=azurite.credential,
                                     retry_total=0) as svc:
            with pytest.raises(ServiceRequestError):
                await svc.create_container(name)
            azurite.start()
            await svc.create_container(name)
            blob: Any = svc.get_container_client(name).get_blob_client("after.txt")
            await blob.upload_blob(b"after restart")
            assert await (await blob.download_blob()).readall() == b"after restart"
            # A graceful stop saves the metadata (a SIGKILL may lose the last seconds).
            azurite.restart()
            assert await (await blob.download_blob()).readall() == b"after restart"
    finally:
        azurite.start()
