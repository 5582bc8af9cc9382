"""One conformance suite that every backend passes (local, and sftp against a real sshd)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aftd.errors import TransferError
from aftd.vfs.base import PathEscapeError, PathExistsError, PathNotFoundError, Vfs
from aftd.vfs.registry import VfsPool

BACKENDS = ["l1", "s1"]
NAMES = ["plain.txt", "with space.txt", "ünïcödé-名前.bin", "dir with space/ä b.txt"]


@pytest.fixture(params=BACKENDS)
def vfs(request: pytest.FixtureRequest, pool: VfsPool) -> Vfs:
    return pool.get(request.param)


async def put(vfs: Vfs, path: str, data: bytes) -> None:
    async with vfs.open_write(path) as w:
        for i in range(0, len(data), 100_000):
            await w.write(data[i:i + 100_000])


async def get(vfs: Vfs, path: str, offset: int = 0) -> bytes:
    out = bytearray()
    async with vfs.open_read(path, offset) as r:
        while chunk := await r.read():
            out += chunk
    return bytes(out)


@pytest.mark.parametrize("name", NAMES)
async def test_write_stat_read_roundtrip(vfs: Vfs, name: str) -> None:
    data = os.urandom(300_001)
    if "/" in name:
        await vfs.makedirs(name.rsplit("/", 1)[0])
    await put(vfs, name, data)
    info = await vfs.stat(name)
    assert (info.size, info.is_dir, info.name) == (len(data), False, name.rsplit("/", 1)[-1])
    assert await get(vfs, name) == data


@pytest.mark.parametrize("size", [0, 1, 261_120, 261_121, 5 * 1024 * 1024 + 7])
async def test_sizes_including_empty_and_large(vfs: Vfs, size: int) -> None:
    data = os.urandom(size)
    await put(vfs, "f.bin", data)
    assert (await vfs.stat("f.bin")).size == size
    assert await get(vfs, "f.bin") == data


async def test_read_from_offset(vfs: Vfs) -> None:
    data = os.urandom(1_000_000)
    await put(vfs, "f.bin", data)
    assert await get(vfs, "f.bin", 777_777) == data[777_777:]
    assert await get(vfs, "f.bin", len(data)) == b""


async def test_write_at_offset_keeps_prefix_and_truncates(vfs: Vfs) -> None:
    assert vfs.features.resumable_write
    await put(vfs, "f.bin", b"A" * 1000)
    async with vfs.open_write("f.bin", 600) as w:
        await w.write(b"B" * 100)
    assert await get(vfs, "f.bin") == b"A" * 600 + b"B" * 100


async def test_listdir_and_makedirs(vfs: Vfs) -> None:
    await vfs.makedirs("a/b/c")
    await vfs.makedirs("a/b/c")  # existing directory is fine
    await put(vfs, "a/one.txt", b"1")
    entries = {e.name: e for e in await vfs.listdir("a")}
    assert set(entries) == {"b", "one.txt"}
    assert entries["b"].is_dir
    assert not entries["one.txt"].is_dir
    assert entries["one.txt"].path == "a/one.txt"
    assert await vfs.listdir("a/b/c") == []


async def test_remove_file_and_empty_dir(vfs: Vfs) -> None:
    await vfs.makedirs("d")
    await put(vfs, "d/x", b"x")
    await vfs.remove("d/x")
    assert not await vfs.exists("d/x")
    await vfs.remove("d")
    assert not await vfs.exists("d")


async def test_rename_refuses_or_replaces_existing_target(vfs: Vfs) -> None:
    await put(vfs, "a", b"new")
    await put(vfs, "b", b"old")
    with pytest.raises(PathExistsError, match="'b'"):
        await vfs.rename("a", "b")
    assert await get(vfs, "b") == b"old"
    await vfs.rename("a", "b", overwrite=True)
    assert await get(vfs, "b") == b"new"
    assert not await vfs.exists("a")
    await vfs.rename("b", "c")
    assert await get(vfs, "c") == b"new"


async def test_set_mtime(vfs: Vfs) -> None:
    await put(vfs, "m", b"m")
    await vfs.set_mtime("m", 1_600_000_000.0)
    assert (await vfs.stat("m")).mtime == 1_600_000_000.0


@pytest.mark.parametrize("op", ["stat", "listdir", "read", "remove", "rename"])
async def test_missing_path_names_vfs_and_path(vfs: Vfs, op: str) -> None:
    missing = "no/such.file"
    calls = {"stat": lambda: vfs.stat(missing), "listdir": lambda: vfs.listdir(missing),
             "read": lambda: get(vfs, missing), "remove": lambda: vfs.remove(missing),
             "rename": lambda: vfs.rename(missing, "x")}
    with pytest.raises(PathNotFoundError) as ei:
        await calls[op]()
    assert vfs.name in str(ei.value)
    assert "no/such.file" in str(ei.value)
    assert ei.value.vfs == vfs.name


async def test_write_into_missing_dir_fails(vfs: Vfs) -> None:
    with pytest.raises(TransferError, match="nodir/f"):
        await put(vfs, "nodir/f", b"x")


@pytest.mark.parametrize("bad", ["../x", "a/../../x", "/etc/passwd", "..", "a/\x00b"])
async def test_paths_outside_root_are_refused(vfs: Vfs, bad: str) -> None:
    with pytest.raises(PathEscapeError):
        await vfs.stat(bad)
    with pytest.raises(PathEscapeError):
        await put(vfs, bad, b"x")


async def test_absolute_path_under_root_and_inner_dotdot_are_fine(vfs: Vfs, pool: VfsPool,
                                                                 ) -> None:
    await put(vfs, "in.txt", b"ok")
    root = getattr(vfs, "root", None)
    absroot = root if isinstance(root, str) else await vfs.root()  # type: ignore[operator]
    assert await get(vfs, f"{absroot}/in.txt") == b"ok"
    assert await get(vfs, "sub/../in.txt") == b"ok"


async def test_permission_denied_is_a_transfer_error(vfs: Vfs, pool: VfsPool) -> None:
    # Root ignores mode bits, so make the target something no user may write: a directory
    # used as a file is refused by every backend with a clear error naming the path.
    await vfs.makedirs("adir")
    with pytest.raises(TransferError, match="adir"):
        await put(vfs, "adir", b"x")
    if os.geteuid() != 0:
        await vfs.makedirs("ro")
        local = pool.get("l1")
        base = Path(local.root) if vfs is local else None  # type: ignore[attr-defined]
        if base is not None:
            (base / "ro").chmod(0o500)
            with pytest.raises(TransferError, match=r"permission denied|Permission"):
                await put(vfs, "ro/f", b"x")


async def test_local_symlink_out_of_root_is_refused(pool: VfsPool, tmp_path: Path) -> None:
    local = pool.get("l1")
    root = Path(local.root)  # type: ignore[attr-defined]
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("s")
    (root / "link").symlink_to(outside)
    (root / "flink").symlink_to(outside / "secret.txt")
    (root / "inner").symlink_to(root)  # a link that stays inside is fine
    for bad in ("link/secret.txt", "flink", "link"):
        with pytest.raises(PathEscapeError, match="outside the VFS root"):
            await get(local, bad)
    with pytest.raises(PathEscapeError):
        await put(local, "link/new.txt", b"x")
    assert not (outside / "new.txt").exists()
    await put(local, "inner/ok.txt", b"ok")
    assert (root / "ok.txt").read_bytes() == b"ok"
