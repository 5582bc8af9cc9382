"""Local confinement under attack: resolution rules, and a directory swapped for a symlink
that leads out of the root while copies and single operations run (both resolve methods)."""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import errno
import os
import threading
import time
from pathlib import Path

import pytest

from aftd.errors import TransferError
from aftd.vfs.confine import OPENAT2, WALK, EscapeError, Resolver, available_method
from aftd.vfs.handle import VfsHandle
from aftd.vfs.local import LocalVfs

METHODS = [
    pytest.param(OPENAT2, marks=pytest.mark.skipif(available_method() != OPENAT2,
                                                   reason="kernel without openat2")),
    WALK,
]
CANARY = b"CANARY-outside-the-root\n"
RACE_SECONDS = 2.5


@pytest.fixture(params=METHODS)
def method(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    """root/ with a file, a directory and links of every kind; outside/ next to it."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "d").mkdir(parents=True)
    outside.mkdir()
    (root / "d" / "f").write_bytes(b"inside")
    (outside / "f").write_bytes(CANARY)
    links = {"rel": "d", "abs_in": str(root / "d"), "dotdot_in": "d/../d", "out_rel": "../outside",
             "out_abs": str(outside), "magic": "/proc/self/root", "loop_a": "loop_b",
             "loop_b": "loop_a", "self": ".", "dangling": "nothing-here"}
    for name, target in links.items():
        (root / name).symlink_to(target)
    (root / "d" / "up").symlink_to("../..")  # one level too far
    return root


def read(r: Resolver, rel: str, **kw: bool) -> bytes:
    fd = r.open(rel, os.O_RDONLY, **kw)
    try:
        return os.read(fd, 100)
    finally:
        os.close(fd)


def test_links_inside_the_root_are_followed(layout: Path, method: str) -> None:
    r = Resolver(str(layout), method)
    assert r.method == method
    for path in ("d/f", "rel/f", "abs_in/f", "dotdot_in/f", "self/d/f", "self/self/rel/f"):
        assert read(r, path) == b"inside", path


@pytest.mark.parametrize("path", ["out_rel/f", "out_abs/f", "magic/etc/hostname", "d/up/x",
                                  "d/up", "out_rel"])
def test_links_out_of_the_root_are_refused(layout: Path, method: str, path: str) -> None:
    with pytest.raises(OSError, match=r"cross-device|outside the VFS root") as ei:
        read(Resolver(str(layout), method), path)
    assert ei.value.errno in (errno.EXDEV, errno.ELOOP), ei.value
    if method == WALK:
        assert isinstance(ei.value, EscapeError)


def test_loops_dangling_links_and_nofollow(layout: Path, method: str) -> None:
    r = Resolver(str(layout), method)
    with pytest.raises(OSError, match="symbolic links") as loop:
        read(r, "loop_a")
    assert loop.value.errno == errno.ELOOP
    with pytest.raises(FileNotFoundError):
        read(r, "dangling")
    with pytest.raises(OSError, match=r"symbolic links|is a symlink|Not a directory") as nofollow:
        read(r, "rel", follow=False)
    assert nofollow.value.errno in (errno.ELOOP, errno.ENOTDIR)
    fd, name = r.open_parent("rel/f")  # the parent may be reached through a link
    os.close(fd)
    assert name == "f"


def test_unknown_method_is_named() -> None:
    with pytest.raises(ValueError, match="unknown resolve method 'chroot'"):
        Resolver("/", "chroot")


class Swapper:
    """Exchanges directories with symlinks out of the root and back, as fast as it can.

    ``renameat2(RENAME_EXCHANGE)`` swaps the two names atomically, so the path always exists:
    an operation sees either the directory or the symlink, never a gap.
    """

    def __init__(self, pairs: list[tuple[Path, Path]]) -> None:
        self.names: list[tuple[bytes, bytes]] = []
        for inside, outside in pairs:  # (directory inside a root, directory outside every root)
            decoy = inside.with_name(inside.name + ".link")
            decoy.symlink_to(outside)
            self.names.append((os.fsencode(inside), os.fsencode(decoy)))
        self.stop = threading.Event()
        self.swaps = 0
        self.thread = threading.Thread(target=self.run, name="swapper", daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            for a, b in self.names:
                _exchange(a, b)
                _exchange(a, b)  # and back
                self.swaps += 1

    def __enter__(self) -> Swapper:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


_libc = ctypes.CDLL(None, use_errno=True)
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def _exchange(a: bytes, b: bytes) -> None:
    if _libc.renameat2(_AT_FDCWD, a, _AT_FDCWD, b, _RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@pytest.fixture
def arena(tmp_path: Path) -> dict[str, Path]:
    paths = {n: tmp_path / n for n in ("src", "dst", "out_read", "out_write")}
    for p in paths.values():
        p.mkdir()
    for i in range(20):
        (paths["src"] / "tree" / "d").mkdir(parents=True, exist_ok=True)
        (paths["src"] / "tree" / "d" / f"f{i}.txt").write_bytes(b"inside %d\n" % i * 50)
        (paths["out_read"] / f"f{i}.txt").write_bytes(CANARY * 50)
    (paths["out_read"] / "only-outside.txt").write_bytes(CANARY)
    (paths["dst"] / "in" / "d").mkdir(parents=True)
    return paths


def outside_state(arena: dict[str, Path]) -> dict[str, bytes | None]:
    return {str(p): p.read_bytes() if p.is_file() else None
            for k in ("out_read", "out_write") for p in arena[k].rglob("*")}


async def _copies(src: LocalVfs, dst: LocalVfs, deadline: float) -> int:
    """Tree copies out of the swapped source and into the swapped destination."""
    ok = n = 0
    while time.monotonic() < deadline:
        n += 1
        res = await VfsHandle(src).copy_to("tree", dst, f"copies/{n}", on_error="continue")
        ok += res.files
        try:  # the copied directory itself may be the symlink out: refused
            res = await VfsHandle(src).copy_to("tree/d", dst, "in/d", overwrite="always",
                                    on_error="continue")
        except TransferError:
            continue
        ok += res.files
    return ok


async def _single_ops(src: LocalVfs, dst: LocalVfs, deadline: float) -> int:
    """One call at a time through every operation, on paths that cross the swapped directory."""
    ok = 0
    while time.monotonic() < deadline:
        for call in (
            lambda: _read_all(src, "tree/d/f3.txt"), lambda: src.stat("tree/d/f3.txt"),
            lambda: src.listdir("tree/d"), lambda: src.checksum("tree/d/f4.txt", "sha256"),
            lambda: _write(dst, "in/d/new.txt"), lambda: dst.makedirs("in/d/sub/deeper"),
            lambda: dst.rename("in/d/new.txt", "in/d/moved.txt", overwrite=True),
            lambda: dst.set_mtime("in/d/moved.txt", 1_000_000.0), lambda: dst.remove("in/d/moved.txt"),
        ):
            try:
                got = await call()
            except TransferError:
                continue
            ok += 1
            _check_not_outside(got)
    return ok


def _check_not_outside(got: object) -> None:
    if isinstance(got, bytes):
        assert CANARY not in got
    elif isinstance(got, list):
        assert "only-outside.txt" not in [e.name for e in got]
    elif hasattr(got, "size"):
        assert got.size != len(CANARY) * 50  # the canary's size: stat went outside


async def _read_all(vfs: LocalVfs, path: str) -> bytes:
    out = bytearray()
    async with vfs.open_read(path) as r:
        while chunk := await r.read():
            out += chunk
    return bytes(out)


async def _write(vfs: LocalVfs, path: str) -> None:
    async with vfs.open_write(path) as w:
        await w.write(b"written inside\n")
        await w.finish(None)


@pytest.mark.slow
@pytest.mark.parametrize("streaming", [False, True], ids=["kernel-copy", "streaming"])
async def test_swapping_a_directory_for_a_symlink_never_leaves_the_root(
        arena: dict[str, Path], method: str, streaming: bool) -> None:
    src = LocalVfs("src", str(arena["src"]), resolve=method, chunk_size=64)
    dst = LocalVfs("dst", str(arena["dst"]), resolve=method, chunk_size=64)
    if streaming:  # through open_read/open_write instead of copy_file_range
        for v in (src, dst):
            v.features = dataclasses.replace(v.features, local_path=False)
    before = outside_state(arena)
    pairs = [(arena["src"] / "tree" / "d", arena["out_read"]),
             (arena["dst"] / "in" / "d", arena["out_write"])]
    deadline = time.monotonic() + RACE_SECONDS
    with Swapper(pairs) as swapper:
        copied, single = await asyncio.gather(_copies(src, dst, deadline),
                                              _single_ops(src, dst, deadline))
    assert swapper.swaps > 100 and copied > 0 and single > 0, (swapper.swaps, copied, single)
    assert outside_state(arena) == before  # nothing written, renamed or removed outside
    for p in arena["dst"].rglob("*"):
        if p.is_file() and not p.is_symlink():
            assert CANARY not in p.read_bytes(), p  # nothing read from outside


@pytest.mark.parametrize("err", [errno.ENOSYS, errno.EPERM])
def test_openat2_refused_by_kernel_or_seccomp_selects_the_walk(
        monkeypatch: pytest.MonkeyPatch, err: int) -> None:
    from aftd.vfs import confine

    def refused(*_: object) -> int:
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(confine, "_openat2", refused)
    monkeypatch.setattr(confine, "_probed", None)
    assert confine.available_method() == WALK
    assert Resolver("/", "auto").method == WALK
    with pytest.raises(OSError, match="openat2 is not available"):
        Resolver("/", OPENAT2)


def test_environment_forces_the_walk(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AFTD_VFS_RESOLVE", WALK)
    assert LocalVfs("x", str(tmp_path)).resolver.method == WALK
    monkeypatch.setenv("AFTD_VFS_RESOLVE", "bogus")
    with pytest.raises(TransferError, match="cannot confine paths: unknown resolve method"):
        LocalVfs("x", str(tmp_path)).resolver  # noqa: B018
