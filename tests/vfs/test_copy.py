"""Copy matrix: local→local, local→sftp, sftp→local, sftp→sftp (two real sshd servers)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from aftd.errors import TransferError
from aftd.jobs.model import Progress
from aftd.vfs.base import PathExistsError
from aftd.vfs.copy import CopyResult
from aftd.vfs.handle import VfsHandle
from aftd.vfs.registry import VfsPool
from tests.vfs.conftest import At, progress_to

PAIRS = [("l1", "l2"), ("l1", "s1"), ("s1", "l1"), ("s1", "s2")]
PAIR_IDS = [f"{a}-{b}" for a, b in PAIRS]
BIG = 256 << 20


def root_of(pool: VfsPool, name: str) -> Path:
    """Where a VFS keeps its files on this machine (sshd roots are local directories too)."""
    vfs = pool.get(name)
    return Path(vfs.root if isinstance(vfs.root, str) else vfs._root_cfg)  # type: ignore[attr-defined]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def debris(d: Path) -> list[str]:
    return [p.name for p in d.rglob("*") if ".aftd-part" in p.name]


@pytest.fixture(scope="session")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    p = tmp_path_factory.mktemp("big") / "big.bin"
    block = os.urandom(1 << 20)
    h = hashlib.sha256()
    with p.open("wb") as f:
        for i in range(BIG >> 20):
            b = i.to_bytes(4, "big") + block[4:]  # distinct blocks, so misplaced data shows
            f.write(b)
            h.update(b)
    yield p, h.hexdigest()
    p.unlink()


def place(pool: VfsPool, name: str, rel: str, src: Path) -> Path:
    dst = root_of(pool, name) / rel
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.link(src, dst) if src.stat().st_dev == dst.parent.stat().st_dev else dst.write_bytes(
        src.read_bytes())
    return dst


@pytest.mark.parametrize(("a", "b"), PAIRS, ids=PAIR_IDS)
async def test_copy_file_verified_with_progress_and_mtime(pool: VfsPool, a: str, b: str) -> None:
    src = root_of(pool, a) / "in" / "report 1.csv"
    src.parent.mkdir()
    data = os.urandom(3_000_017)
    src.write_bytes(data)
    os.utime(src, (1_650_000_000, 1_650_000_000))
    sink = Progress()  # the sink the runner hands every job
    with progress_to(sink):
        res = await VfsHandle(pool.get(a)).copy_to("in/report 1.csv", pool.get(b), "out/x", verify="sha256")
    out = root_of(pool, b) / "out" / "x" / "report 1.csv"
    assert out.read_bytes() == data
    assert out.stat().st_mtime == 1_650_000_000
    assert (res.files, res.bytes) == (1, len(data))
    assert res.checksums == {"out/x/report 1.csv": hashlib.sha256(data).hexdigest()}
    # The destination checked what it stored: sshd runs sha256sum, a local file is read back.
    how = "remote-sha256" if b.startswith("s") else "read-back"
    assert res.verified_by == {"out/x/report 1.csv": how}
    assert (sink.files_total, sink.bytes_total, sink.files_done, sink.bytes_done) == (1, len(data), 1,
                                                                           len(data))
    assert debris(root_of(pool, b)) == []


@pytest.mark.parametrize(("a", "b"), PAIRS, ids=PAIR_IDS)
async def test_copy_256_mib(pool: VfsPool, a: str, b: str, big_file: tuple[Path, str]) -> None:
    path, digest = big_file
    place(pool, a, "big.bin", path)
    res = await VfsHandle(pool.get(a)).copy_to("big.bin", pool.get(b), "")
    assert res.bytes == BIG
    assert sha256(root_of(pool, b) / "big.bin") == digest


def make_tree(base: Path, n: int = 1000) -> dict[str, bytes]:
    files = {}
    for i in range(n):
        rel = f"d{i % 10}/sub{i % 3}/f{i:04d}.dat" if i % 7 else f"top{i:04d}.txt"
        data = os.urandom(i % 5000)
        p = base / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        files[rel] = data
    return files


@pytest.mark.parametrize(("a", "b"), PAIRS, ids=PAIR_IDS)
async def test_copy_tree_of_1000_files(pool: VfsPool, a: str, b: str) -> None:
    files = make_tree(root_of(pool, a) / "tree")
    res = await VfsHandle(pool.get(a)).copy_to("tree", pool.get(b), "dest", transfers=4)
    assert (res.files, res.bytes) == (1000, sum(map(len, files.values())))
    out = root_of(pool, b) / "dest" / "tree"
    got = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert got == files


async def test_include_exclude_and_root_copy(pool: VfsPool) -> None:
    base = root_of(pool, "l1")
    for rel in ("a.csv", "b.txt", "skip/c.csv", "keep/d.csv", "keep/e.log"):
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_text(rel)
    res = await VfsHandle(pool.get("l1")).copy_to("", pool.get("s1"), "o", include=["*.csv"],
                                       exclude=["skip"])
    out = root_of(pool, "s1") / "o"
    got = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert got == ["a.csv", "keep/d.csv"]
    assert res.files == 2


@pytest.mark.parametrize("b", ["l2", "s1"])
async def test_overwrite_policies(pool: VfsPool, b: str) -> None:
    src, dst = pool.get("l1"), pool.get(b)
    s = root_of(pool, "l1") / "f.txt"
    d = root_of(pool, b) / "f.txt"
    s.write_text("new content")
    d.write_text("old")
    with pytest.raises(PathExistsError, match=rf"{b}.*f\.txt.*exists"):
        await VfsHandle(src).copy_to("f.txt", dst, "")
    assert d.read_text() == "old"
    os.utime(s, (1000, 1000))
    res = await VfsHandle(src).copy_to("f.txt", dst, "", overwrite="if_newer")  # source is older: skip
    assert (res.files, res.skipped, d.read_text()) == (0, 1, "old")
    res = await VfsHandle(src).copy_to("f.txt", dst, "", overwrite="if_size_differs")
    assert (res.files, d.read_text()) == (1, "new content")
    res = await VfsHandle(src).copy_to("f.txt", dst, "", overwrite="if_size_differs")
    assert (res.files, res.skipped) == (0, 1)
    d.write_text("different!!")  # same size, different bytes: "always" replaces
    res = await VfsHandle(src).copy_to("f.txt", dst, "", overwrite="always")
    assert d.read_text() == "new content"
    assert debris(root_of(pool, b)) == []


async def test_bad_arguments_are_clear(pool: VfsPool) -> None:
    src = pool.get("l1")
    (root_of(pool, "l1") / "f").write_text("x")
    with pytest.raises(TransferError, match="overwrite must be one of"):
        await VfsHandle(src).copy_to("f", pool.get("l2"), "", overwrite="sometimes")  # type: ignore[arg-type]
    with pytest.raises(TransferError, match="verify must be"):
        await VfsHandle(src).copy_to("f", pool.get("l2"), "", verify="md5")  # type: ignore[arg-type]
    with pytest.raises(TransferError, match=r"'l1'.*'nope'.*no such file"):
        await VfsHandle(src).copy_to("nope", pool.get("l2"), "")
    with pytest.raises(TransferError, match="escapes"):
        await VfsHandle(src).copy_to("f", pool.get("l2"), "../up")


@pytest.mark.parametrize(("a", "b"), PAIRS, ids=PAIR_IDS)
async def test_cancel_half_way_leaves_nothing(pool: VfsPool, a: str, b: str,
                                              big_file: tuple[Path, str]) -> None:
    place(pool, a, "big.bin", big_file[0])
    holder: list[asyncio.Task[CopyResult]] = []
    sink = At(BIG // 2, lambda: holder[0].cancel())
    with progress_to(sink):
        holder.append(asyncio.create_task(VfsHandle(pool.get(a)).copy_to("big.bin", pool.get(b), "o")))
    with pytest.raises(asyncio.CancelledError):
        await holder[0]
    assert BIG // 2 <= sink.bytes_done < BIG
    out = root_of(pool, b) / "o"
    assert list(out.iterdir()) == []  # neither the final name nor a temporary file


# -- on_error: per-file results --------------------------------------------------------------

class VanishAfterListing(Progress):
    """Deletes a source file once the copy has listed the tree (add_total comes right after)."""

    def __init__(self, victim: Path) -> None:
        super().__init__()
        self.victim = victim

    def add_total(self, files: int = 0, nbytes: int = 0) -> None:
        super().add_total(files, nbytes)
        self.victim.unlink()


def flat_tree(base: Path, names: list[str]) -> dict[str, bytes]:
    files = {}
    for n in names:
        (base / n).parent.mkdir(parents=True, exist_ok=True)
        (base / n).write_bytes(n.encode() * 1000)
        files[n] = (base / n).read_bytes()
    return files


@pytest.mark.parametrize(("a", "b"), [("l1", "l2"), ("l1", "s1"), ("s1", "l1")],
                         ids=["l1-l2", "l1-s1", "s1-l1"])
async def test_on_error_continue_attempts_every_file(pool: VfsPool, a: str, b: str) -> None:
    names = ["a.txt", "b.txt", "c.txt", "gone.txt", "sub/e.txt"]
    files = flat_tree(root_of(pool, a) / "t", names)
    (root_of(pool, b) / "t" / "b.txt").mkdir(parents=True)  # a directory in the way
    expect_failed = {"t/b.txt": "directory is in the way", "t/gone.txt": "no such file"}
    if os.geteuid() != 0:  # root reads anything; elsewhere an unreadable file fails on its own
        (root_of(pool, a) / "t" / "c.txt").chmod(0)
        expect_failed["t/c.txt"] = "ermission denied"
    sink = VanishAfterListing(root_of(pool, a) / "t" / "gone.txt")
    with progress_to(sink):
        res = await VfsHandle(pool.get(a)).copy_to("t", pool.get(b), "", on_error="continue", transfers=2)
    failed = dict(res.failed)
    assert set(failed) == set(expect_failed), res.failed
    for path, needle in expect_failed.items():
        assert needle in failed[path] and f"'{b if path == 't/b.txt' else a}'" in failed[path]
    delivered = {n: files[n] for n in names if f"t/{n}" not in failed}
    assert files_at(root_of(pool, b) / "t") == delivered
    assert (res.files, res.ok) == (len(delivered), False)
    assert sink.files_done == len(names)  # every file was attempted
    assert debris(root_of(pool, b)) == []


def files_at(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in d.rglob("*") if p.is_file()}


async def test_on_error_continue_reports_a_blocked_directory_once_per_file(pool: VfsPool) -> None:
    flat_tree(root_of(pool, "l1") / "t", ["a.txt", "sub/x.txt", "sub/y.txt", "sub/deep/z.txt"])
    (root_of(pool, "l2") / "t").mkdir()
    (root_of(pool, "l2") / "t" / "sub").write_bytes(b"a file where a directory must go")
    res = await VfsHandle(pool.get("l1")).copy_to("t", pool.get("l2"), "", on_error="continue")
    assert res.files == 1
    assert sorted(p for p, _ in res.failed) == ["t/sub/deep/z.txt", "t/sub/x.txt", "t/sub/y.txt"]
    assert all("'t/sub" in err for _, err in res.failed), res.failed


@pytest.mark.parametrize("b", ["l2", "s1"])
async def test_on_error_stop_names_what_was_delivered(pool: VfsPool, b: str) -> None:
    flat_tree(root_of(pool, "l1") / "t", ["a.txt", "b.txt", "c.txt", "d.txt", "e.txt"])
    flat_tree(root_of(pool, b) / "t", ["d.txt"])  # exists: policy "never" refuses it
    with pytest.raises(PathExistsError) as ei:
        await VfsHandle(pool.get("l1")).copy_to("t", pool.get(b), "", transfers=1)
    assert ei.value.delivered == ["t/a.txt", "t/b.txt", "t/c.txt"]
    assert "3 of 5 files already delivered" in str(ei.value)
    assert "'t/d.txt'" in str(ei.value)
    assert sorted(files_at(root_of(pool, b) / "t")) == ["a.txt", "b.txt", "c.txt", "d.txt"]


async def test_on_error_value_is_checked(pool: VfsPool) -> None:
    (root_of(pool, "l1") / "f").write_text("x")
    with pytest.raises(TransferError, match="on_error must be 'stop' or 'continue'; got 'skip'"):
        await VfsHandle(pool.get("l1")).copy_to("f", pool.get("l2"), "", on_error="skip")  # type: ignore[arg-type]
