"""One conformance suite that every backend passes: each backend of the registry in
tests/vfs/backends.py (local, SFTP against a real sshd, FTPS against vsftpd and pyftpdlib, S3
against SeaweedFS and rclone serve s3, and whatever else registers there), through the Vfs
protocol only. Capabilities a backend lacks by nature are read from its ``features`` (object
stores have virtual directories and no appends).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from aftd.errors import TransferError
from aftd.vfs.base import PathEscapeError, PathExistsError, PathNotFoundError, Vfs
from aftd.vfs.handle import VfsHandle
from aftd.vfs.registry import VfsPool
from tests.vfs.backends import BACKENDS, ON_DISK, BackendTarget
from tests.vfs.conftest import LOCAL_ROOTS, target_of, target_vfs

NAMES = ["plain.txt", "with space.txt", "ünïcödé-名前.bin", "dir with space/ä b.txt"]


@pytest.fixture(params=list(BACKENDS))
def target(request: pytest.FixtureRequest) -> BackendTarget:
    return target_of(request, request.param)


@pytest.fixture
async def vfs(target: BackendTarget) -> AsyncIterator[Vfs]:
    async with target_vfs(target) as v:
        yield v


@pytest.fixture(params=ON_DISK)
async def disk_vfs(request: pytest.FixtureRequest) -> AsyncIterator[Vfs]:
    async with target_vfs(target_of(request, request.param)) as v:
        yield v


async def put(vfs: Vfs, path: str, data: bytes) -> None:
    async with vfs.open_write(path) as w:
        for i in range(0, len(data), 100_000):
            await w.write(data[i:i + 100_000])


async def put_at(vfs: Vfs, path: str, offset: int) -> None:
    async with vfs.open_write(path, offset) as w:
        await w.write(b"B")


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
    if not vfs.features.resumable_write:
        with pytest.raises(TransferError, match="offset 0"):
            await put_at(vfs, "f.bin", 600)
        return
    await put(vfs, "f.bin", b"A" * 1000)
    async with vfs.open_write("f.bin", 600) as w:
        await w.write(b"B" * 100)
    assert await get(vfs, "f.bin") == b"A" * 600 + b"B" * 100


async def test_listdir_and_makedirs(vfs: Vfs) -> None:
    await vfs.makedirs("a/b/c")
    await vfs.makedirs("a/b/c")  # existing directory is fine
    await put(vfs, "a/one.txt", b"1")
    if vfs.features.virtual_dirs:  # an empty directory is nothing: a file makes it exist
        await put(vfs, "a/b/c/deep.txt", b"d")
    entries = {e.name: e for e in await vfs.listdir("a")}
    assert set(entries) == {"b", "one.txt"}
    assert entries["b"].is_dir
    assert not entries["one.txt"].is_dir
    assert entries["one.txt"].path == "a/one.txt"
    assert (entries["one.txt"].size, (await vfs.stat("a/b")).is_dir) == (1, True)
    if vfs.features.virtual_dirs:
        assert [e.path for e in await vfs.listdir("a/b/c")] == ["a/b/c/deep.txt"]
    else:
        assert await vfs.listdir("a/b/c") == []
        assert [e async for e in vfs.scandir("a/b/c")] == []
    streamed = [e async for e in vfs.scandir("a")]
    assert sorted(streamed, key=lambda e: e.path) == sorted(entries.values(),
                                                            key=lambda e: e.path)


async def test_virtual_directories_come_and_go_with_their_files(vfs: Vfs) -> None:
    if not vfs.features.virtual_dirs:
        pytest.skip("directories are real on this backend")
    await vfs.makedirs("empty")  # succeeds, creates nothing
    assert not await vfs.exists("empty")
    await put(vfs, "d/sub/x.txt", b"x")
    assert (await vfs.stat("d")).is_dir and (await vfs.stat("d/sub")).is_dir
    with pytest.raises(TransferError, match="not empty"):
        await vfs.remove("d/sub")
    with pytest.raises(TransferError, match="not a directory"):
        await vfs.listdir("d/sub/x.txt")
    await vfs.remove("d/sub/x.txt")
    # An empty directory may vanish (rclone's rule) or stay as a "folder" key (SeaweedFS keeps
    # its filer's directories): either way it is a directory, empty, and removable.
    if await vfs.exists("d/sub"):
        assert (await vfs.stat("d/sub")).is_dir
        assert await vfs.listdir("d/sub") == []
        await vfs.remove("d/sub")
    else:
        with pytest.raises(PathNotFoundError):
            await vfs.listdir("d/sub")
    assert [e.path for e in await vfs.listdir("") if not e.is_dir] == []


async def test_remove_file_and_empty_dir(vfs: Vfs) -> None:
    await vfs.makedirs("d")
    await put(vfs, "d/x", b"x")
    await vfs.remove("d/x")
    assert not await vfs.exists("d/x")
    if not vfs.features.virtual_dirs or await vfs.exists("d"):  # or it went with its file
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


async def test_a_write_that_fails_leaves_nothing(target: BackendTarget, vfs: Vfs) -> None:
    """An exception inside open_write: a publish-on-finish backend aborts (no object, no
    incomplete upload); the others keep what was written (the copy engine removes it)."""
    await put(vfs, "kept.bin", b"old")

    async def broken_write(name: str) -> None:
        async with vfs.open_write(name, size=20 << 20) as w:
            for _ in range(20):
                await w.write(os.urandom(1 << 20))  # more than a part, on object stores
            raise RuntimeError("the source broke")

    for name in ("new.bin", "kept.bin"):
        with pytest.raises(RuntimeError):
            await broken_write(name)
    if vfs.features.publish_on_finish:
        assert not await vfs.exists("new.bin")
        assert await get(vfs, "kept.bin") == b"old"  # replaced only by a complete upload
        assert await target.leftovers() == []


async def test_copy_keeps_mtime_and_honours_overwrite_policies(vfs: Vfs, tmp_path: Path,
                                                              ) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.txt").write_text("new content")
    os.utime(src / "f.txt", (1_650_000_000, 1_650_000_000))  # whole seconds: SFTP v3 keeps no more
    async with target_vfs(BackendTarget("local", {"type": "local", "root": str(src)}, {})) as lv:
        local = VfsHandle(lv)
        res = await local.copy_to("f.txt", vfs, "o")
        assert (res.files, (await vfs.stat("o/f.txt")).mtime) == (1, 1_650_000_000)
        async with vfs.open_read("o/f.txt") as r:
            assert r.mtime in (None, 1_650_000_000)
        with pytest.raises(PathExistsError, match=r"o/f\.txt.*exists"):
            await local.copy_to("f.txt", vfs, "o")
        res = await local.copy_to("f.txt", vfs, "o", overwrite="if_newer")  # same time: kept
        assert (res.files, res.skipped) == (0, 1)
        res = await local.copy_to("f.txt", vfs, "o", overwrite="if_size_differs")
        assert (res.files, res.skipped) == (0, 1)
        await put(vfs, "o/f.txt", b"older, and bigger")
        await vfs.set_mtime("o/f.txt", 1_000_000_000.0)
        res = await local.copy_to("f.txt", vfs, "o", overwrite="if_newer")
        assert (res.files, await get(vfs, "o/f.txt")) == (1, b"new content")
        await put(vfs, "o/f.txt", b"same size!!")
        res = await local.copy_to("f.txt", vfs, "o", overwrite="always")
        assert (res.files, await get(vfs, "o/f.txt")) == (1, b"new content")
        back = await VfsHandle(vfs).copy_to("o/f.txt", lv, "back")
        assert back.files == 1
    assert (src / "back" / "f.txt").stat().st_mtime == 1_650_000_000
    assert {e.name for e in await vfs.listdir("o")} == {"f.txt"}  # no temporary names left


async def _scan(vfs: Vfs, path: str) -> list[Any]:
    return [e async for e in vfs.scandir(path)]


@pytest.mark.parametrize("op", ["stat", "listdir", "scandir", "read", "remove", "rename"])
async def test_missing_path_names_vfs_and_path(vfs: Vfs, op: str) -> None:
    missing = "no/such.file"
    calls = {"stat": lambda: vfs.stat(missing), "listdir": lambda: vfs.listdir(missing),
             "scandir": lambda: _scan(vfs, missing),
             "read": lambda: get(vfs, missing), "remove": lambda: vfs.remove(missing),
             "rename": lambda: vfs.rename(missing, "x")}
    with pytest.raises(PathNotFoundError) as ei:
        await calls[op]()
    assert vfs.name in str(ei.value)
    assert "no/such.file" in str(ei.value)
    assert ei.value.vfs == vfs.name


async def test_write_into_missing_dir_fails(vfs: Vfs) -> None:
    if vfs.features.virtual_dirs:  # no directory needs to exist
        await put(vfs, "nodir/f", b"x")
        assert await get(vfs, "nodir/f") == b"x"
        return
    with pytest.raises(TransferError, match="nodir/f"):
        await put(vfs, "nodir/f", b"x")


@pytest.mark.parametrize("bad", ["../x", "a/../../x", "/etc/passwd", "..", "a/\x00b"])
async def test_paths_outside_root_are_refused(vfs: Vfs, bad: str) -> None:
    with pytest.raises(PathEscapeError):
        await vfs.stat(bad)
    with pytest.raises(PathEscapeError):
        await put(vfs, bad, b"x")


@pytest.mark.parametrize("bad", ["a\\..\\..\\x", "..%2F..%2Fx", "a%2fb", "a%5Cb"])
async def test_encoded_separators_and_backslashes_are_refused(target: BackendTarget, vfs: Vfs,
                                                              bad: str) -> None:
    if not target.strict_names:
        pytest.skip("a legal file name on this backend")
    for op in (vfs.stat(bad), put(vfs, bad, b"x"), vfs.listdir(bad), vfs.remove(bad)):
        with pytest.raises(PathEscapeError, match=f"'{vfs.name}'"):
            await op
    assert await vfs.listdir("") == []


async def test_encoded_dots_never_climb(target: BackendTarget, vfs: Vfs) -> None:
    """``%2e%2e`` is refused where a server could decode it (object stores, whose keys go into
    URLs), and is a plain name that stays inside the root elsewhere (a file system, FTP)."""
    bad = "%2e%2e/x"
    if vfs.features.virtual_dirs:
        with pytest.raises(PathEscapeError, match=f"'{vfs.name}'"):
            await put(vfs, bad, b"x")
        assert await vfs.listdir("") == []
        return
    await vfs.makedirs("%2e%2e")
    await put(vfs, bad, b"x")
    assert await get(vfs, bad) == b"x"
    assert [e.name for e in await vfs.listdir("")] == ["%2e%2e"]
    if target.local_dir is not None:
        assert (target.local_dir / "%2e%2e" / "x").read_bytes() == b"x"


async def test_absolute_path_under_root_and_inner_dotdot_are_fine(vfs: Vfs) -> None:
    await put(vfs, "in.txt", b"ok")
    assert await get(vfs, "sub/../in.txt") == b"ok"
    if vfs.features.virtual_dirs:  # object stores have no absolute paths at all
        with pytest.raises(PathEscapeError, match="absolute"):
            await get(vfs, "/in.txt")
        return
    root = getattr(vfs, "root", None)
    absroot = root if isinstance(root, str) else await vfs.root()  # type: ignore[operator]
    assert await get(vfs, f"{absroot}/in.txt") == b"ok"
    assert await get(vfs, "sub/../in.txt") == b"ok"


async def test_permission_denied_is_a_transfer_error(disk_vfs: Vfs, pool: VfsPool) -> None:
    # Root ignores mode bits, so make the target something no user may write: a directory
    # used as a file is refused by every backend with a clear error naming the path.
    vfs = disk_vfs
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


# -- symlinks and special files in trees ----------------------------------------------------

LINKS = {"loop": ".", "sub/up": "..", "file_link": "a.txt", "dir_link": "sub",
         "dangling": "missing"}


async def root_dir(vfs: Vfs) -> Path:
    """The VFS root as a directory of this machine."""
    if vfs in LOCAL_ROOTS:
        return LOCAL_ROOTS[vfs]
    root = vfs.root  # type: ignore[attr-defined]
    return Path(root if isinstance(root, str) else await root())


@pytest.fixture
async def link_tree(disk_vfs: Vfs, tmp_path: Path) -> Path:
    """tree/ with two files, links inside, out of the root, a loop, a dangling one and a FIFO."""
    tree = await root_dir(disk_vfs) / "tree"
    outside = tmp_path / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "secret.txt").write_bytes(b"must not be copied")
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_bytes(b"a")
    (tree / "sub" / "b.txt").write_bytes(b"b")
    for name, target in LINKS.items():
        (tree / name).symlink_to(target)
    (tree / "out_abs").symlink_to(outside)
    (tree / "out_rel").symlink_to(os.path.relpath(outside, tree))
    os.mkfifo(tree / "fifo")
    return tree


def files_under(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*"))
            if p.is_file() and not p.is_symlink()}


async def test_listdir_reports_symlinks_without_following(disk_vfs: Vfs, link_tree: Path,
                                                          ) -> None:
    vfs = disk_vfs
    entries = {e.name: e for e in await vfs.listdir("tree")}
    for name in ("loop", "file_link", "dir_link", "dangling", "out_abs", "out_rel"):
        assert entries[name].is_link and not entries[name].is_dir, name
    assert entries["fifo"].special and not entries["fifo"].is_link
    assert entries["sub"].is_dir and not entries["sub"].is_link
    assert not (entries["a.txt"].is_link or entries["a.txt"].special)
    assert (await vfs.stat("tree/dir_link")).is_dir  # an explicit path follows a link inside


async def test_tree_copy_skips_symlinks_and_special_files(disk_vfs: Vfs, link_tree: Path,
                                                          ) -> None:
    vfs = disk_vfs
    res = await VfsHandle(vfs).copy_to("tree", vfs, "copy")
    assert (res.files, res.failed) == (2, [])
    skipped = {s.path: s.reason for s in res.skipped_links}
    assert set(skipped) == {f"tree/{n}" for n in (*LINKS, "out_abs", "out_rel")}
    assert all("not followed" in r for r in skipped.values())
    assert [s.path for s in res.skipped_special] == ["tree/fifo"]
    assert res.skipped == len(skipped) + 1
    out = await root_dir(vfs) / "copy" / "tree"
    assert files_under(out) == {"a.txt": b"a", "sub/b.txt": b"b"}
    assert not [p for p in out.rglob("*") if p.is_symlink()]


async def test_tree_copy_follows_links_inside_the_root(disk_vfs: Vfs, link_tree: Path) -> None:
    vfs = disk_vfs
    res = await VfsHandle(vfs).copy_to("tree", vfs, "copy", follow_symlinks=True)
    out = await root_dir(vfs) / "copy" / "tree"
    assert files_under(out) == {"a.txt": b"a", "sub/b.txt": b"b", "file_link": b"a",
                                "dir_link/b.txt": b"b"}
    reasons = {s.path: s.reason for s in res.skipped_links}
    assert set(reasons) == {"tree/loop", "tree/sub/up", "tree/dir_link/up", "tree/dangling",
                            "tree/out_abs", "tree/out_rel"}
    for loop in ("tree/loop", "tree/sub/up", "tree/dir_link/up"):
        assert "loop" in reasons[loop], reasons
    assert "outside the VFS root" in reasons["tree/out_abs"]
    assert "outside the VFS root" in reasons["tree/out_rel"]
    assert "dangling" in reasons["tree/dangling"]
    assert (res.files, res.failed) == (4, [])


async def test_local_fifo_by_name_fails_instead_of_hanging(pool: VfsPool) -> None:
    # Only local: an SFTP server opens a FIFO itself; listings keep tree copies away from it.
    local = pool.get("l1")
    os.mkfifo(Path(local.root) / "fifo")  # type: ignore[attr-defined]
    with pytest.raises(TransferError, match="not a regular file"):
        await VfsHandle(local).copy_to("fifo", pool.get("l2"), "")
    with pytest.raises(TransferError, match="not a regular file"):
        await put(local, "fifo", b"x")


async def test_local_open_cancelled_mid_call_leaks_no_descriptor(pool: VfsPool) -> None:
    from aftd import executors

    local = pool.get("l1")
    await put(local, "f", b"x" * 1000)
    before = len(os.listdir("/proc/self/fd"))

    async def hold_open(path: str, write: bool) -> None:
        async with (local.open_write(path) if write else local.open_read(path)):
            await asyncio.sleep(10)

    for i in range(100):
        task = asyncio.create_task(hold_open("f" if i % 2 else f"w{i}", bool(i % 2 == 0)))
        for _ in range(i % 3):  # cancel at different points: queued, in the thread, opened
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    io = executors.get(executors.FILE_IO)
    while io.pending:  # the threads finish the opens they had started, then close them
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    assert len(os.listdir("/proc/self/fd")) == before
