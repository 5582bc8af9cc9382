"""VFS pools on the Azure Blob and GCS emulators, for the tests of those backends::

    from tests.vfs.blob_fixtures import blob_store  # noqa: F401

(the servers, ``azurite`` and ``fake_gcs``, are session fixtures of tests/vfs/conftest.py)

``blob_store`` (parametrised ``azure`` / ``gcs``) yields a :class:`BlobStore`: a pool with a
local root ``l1``, ``obj`` (a fresh container or bucket, under ``prefix/``) and ``obj2`` (a
second one in the same account, for server-side copies), the server (``kill``/``start``), and
:meth:`BlobStore.names`, every object name the server holds in a container or bucket (what a
test checks to prove nothing was left behind).
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from azure.storage.blob.aio import BlobServiceClient

from aftd.vfs.registry import VfsPool
from tests.fixtures.azurite import AzuriteServer
from tests.fixtures.gcs import GcsServer
from tests.vfs.conftest import DictSecrets, make_pool

__all__ = ["BlobStore", "Bytes", "azure_store", "blob_store", "make_store"]

PREFIX = "pre/"


@dataclass
class BlobStore:
    kind: str  # "azure" or "gcs"
    server: AzuriteServer | GcsServer
    buckets: tuple[str, str]  # containers or buckets
    local: Path
    secrets: DictSecrets
    pool: VfsPool = field(init=False)

    def entry(self, bucket: str, **extra: Any) -> dict[str, Any]:
        # Small blocks, chunks and read ranges: the tests' few MiB take the multi-request paths.
        if isinstance(self.server, AzuriteServer):
            extra.setdefault("block_size_mib", 1)
            extra.setdefault("read_chunk_mib", 1)
        else:
            extra.setdefault("chunk_size_mib", 1)
        return self.server.vfs_options(bucket, prefix=PREFIX, **extra)

    def build(self, **extra: Any) -> VfsPool:
        entries = {"l1": {"type": "local", "root": str(self.local)},
                   "obj": self.entry(self.buckets[0], **extra),
                   "obj2": self.entry(self.buckets[1], **extra)}
        self.pool = make_pool(entries, self.secrets)
        return self.pool

    async def names(self, which: int = 0) -> list[str]:
        """Every object (blob) name in container/bucket ``which``, prefix included; on Azure
        also names holding only uncommitted (staged) blocks, what a failed upload could leave."""
        bucket = self.buckets[which]
        if isinstance(self.server, AzuriteServer):
            async with BlobServiceClient(self.server.account_url,
                                         credential=self.server.credential) as svc:
                container = svc.get_container_client(bucket)
                return sorted([b.name async for b in
                               container.list_blobs(include=["uncommittedblobs"])])
        url = f"{self.server.endpoint}/storage/v1/b/{quote(bucket)}/o"
        with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - loopback
            return sorted(item["name"] for item in json.loads(resp.read()).get("items", []))


async def make_store(kind: str, server: AzuriteServer | GcsServer, local: Path) -> BlobStore:
    buckets = (f"t-{uuid.uuid4().hex[:16]}", f"t-{uuid.uuid4().hex[:16]}")
    if isinstance(server, AzuriteServer):
        async with BlobServiceClient(server.account_url, credential=server.credential) as svc:
            for name in buckets:
                await svc.create_container(name)
    else:
        for name in buckets:
            server.create_bucket(name)
    local.mkdir(exist_ok=True)
    store = BlobStore(kind, server, buckets, local, DictSecrets(dict(server.secrets)))
    store.build()
    return store


@pytest.fixture(params=["azure", "gcs"])
async def blob_store(request: pytest.FixtureRequest, tmp_path: Path,
                     ) -> AsyncIterator[BlobStore]:
    server = request.getfixturevalue("azurite" if request.param == "azure" else "fake_gcs")
    store = await make_store(request.param, server, tmp_path / "l1")
    yield store
    await store.pool.aclose()


@pytest.fixture
async def azure_store(azurite: AzuriteServer, tmp_path: Path) -> AsyncIterator[BlobStore]:
    """:func:`blob_store` on Azurite only."""
    store = await make_store("azure", azurite, tmp_path / "l1")
    yield store
    await store.pool.aclose()


class Bytes:
    """A progress sink that counts bytes, for tests that act half-way through a copy."""

    def __init__(self) -> None:
        self.done = 0
        self.total = 0

    def add_total(self, files: int = 0, nbytes: int = 0) -> None:
        self.total += nbytes

    def advance(self, files: int = 0, nbytes: int = 0) -> None:
        self.done += nbytes
