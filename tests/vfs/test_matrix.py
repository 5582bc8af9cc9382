"""The copy matrix: every ordered pair of the backends in MATRIX (tests/vfs/backends.py): a 64 MiB
file copied with verify="sha256", and a 200-file tree, each read back independently (sha256
equal).

One pool and one event loop serve the whole module, and each backend's sources are written once:
the pairs then only copy. Same-backend pairs copy between two roots on the same server (object
stores copy server side).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio

from aftd.vfs.base import Vfs, read_back_sha256
from aftd.vfs.handle import VfsHandle
from aftd.vfs.registry import VfsPool
from tests.vfs.backends import MATRIX
from tests.vfs.conftest import DictSecrets, make_pool, target_of

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

BIG = 64 << 20
TREE_FILES = 200
PAIRS = [(a, b) for a in MATRIX for b in MATRIX]
IDS = [f"{a}-to-{b}" for a, b in PAIRS]
# How a destination may say it checked what it stored (README, "verify"): the server's own
# hash of the file, a checksum it verified on receipt (S3 SHA-256, Azure/GCS MD5), a read-back.
METHODS = {"read-back", "remote-sha256", "server-sha256", "server-md5", "server-block-md5"}


@dataclass
class Matrix:
    pool: VfsPool
    big_sha: str
    tree: dict[str, str]  # path under "tree/" -> sha256
    tree_bytes: int

    def src(self, backend: str) -> Vfs:
        return self.pool.get(f"{backend}-src")

    def dst(self, backend: str) -> Vfs:
        return self.pool.get(f"{backend}-dst")


def _tree_files() -> dict[str, bytes]:
    files = {}
    for i in range(TREE_FILES):
        rel = f"d{i % 4}/sub{i % 3}/f{i:03d}.dat" if i % 9 else f"top{i:03d}.txt"
        files[rel] = os.urandom((i * 997) % 40_000)
    return files


async def _seed(vfs: Vfs, big: bytes, tree: dict[str, bytes]) -> None:
    async with vfs.open_write("big.bin") as w:
        for i in range(0, len(big), 1 << 20):
            await w.write(big[i:i + (1 << 20)])
    for rel, data in tree.items():
        path = f"tree/{rel}"
        await vfs.makedirs(path.rsplit("/", 1)[0])
        async with vfs.open_write(path) as w:
            await w.write(data)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def matrix(request: pytest.FixtureRequest) -> AsyncIterator[Matrix]:
    entries, secrets = {}, {}
    for backend in MATRIX:
        for role in ("src", "dst"):
            t = target_of(request, backend)
            entries[f"{backend}-{role}"] = t.entry
            secrets.update(t.secrets)
    pool = make_pool(entries, DictSecrets(secrets))
    block = os.urandom(1 << 20)
    big = b"".join(i.to_bytes(4, "big") + block[4:] for i in range(BIG >> 20))
    tree = _tree_files()
    for backend in MATRIX:
        await _seed(pool.get(f"{backend}-src"), big, tree)
    yield Matrix(pool, hashlib.sha256(big).hexdigest(),
                 {k: hashlib.sha256(v).hexdigest() for k, v in tree.items()},
                 sum(map(len, tree.values())))
    await pool.aclose()


@pytest.mark.parametrize(("a", "b"), PAIRS, ids=IDS)
async def test_64_mib_file(matrix: Matrix, a: str, b: str) -> None:
    dst = matrix.dst(b)
    res = await VfsHandle(matrix.src(a)).copy_to("big.bin", dst, f"{a}-big", verify="sha256")
    path = f"{a}-big/big.bin"
    assert (res.files, res.bytes, res.checksums) == (1, BIG, {path: matrix.big_sha})
    assert res.verified_by[path] in METHODS
    if a == b and dst.features.publish_on_finish:
        assert res.server_side == 1  # same object store account: the server copied it
    assert await read_back_sha256(dst, path) == matrix.big_sha
    await dst.remove(path)


@pytest.mark.parametrize(("a", "b"), PAIRS, ids=IDS)
async def test_200_file_tree(matrix: Matrix, a: str, b: str) -> None:
    dst = matrix.dst(b)
    # Unverified: the read-back below checks every file, and verification per file is the
    # 64 MiB test's and each backend's own tests' subject (on SFTP it costs an SSH exec per file).
    res = await VfsHandle(matrix.src(a)).copy_to("tree", dst, f"{a}-tree", transfers=8)
    assert (res.files, res.failed, res.bytes) == (TREE_FILES, [], matrix.tree_bytes)
    base = f"{a}-tree/tree/"
    gate = asyncio.Semaphore(8)

    async def read_back(rel: str) -> str:
        async with gate:
            return await read_back_sha256(dst, base + rel)

    stored = await asyncio.gather(*(read_back(rel) for rel in matrix.tree))
    assert dict(zip(matrix.tree, stored, strict=True)) == matrix.tree
