"""``local``: a directory on this host. Blocking calls run on the ``file_io`` executor.

Confinement (README, "Invariants") is race-free: every path is opened beneath a descriptor of the
root by :mod:`aftd.vfs.confine` (``openat2(RESOLVE_BENEATH)`` or a component-by-component walk with
``O_NOFOLLOW``), and each operation then acts on the descriptor it got, or on one name relative to
a descriptor of its parent directory (``mkdirat``, ``unlinkat``, ``renameat``...). No path string
is resolved twice, so swapping a directory for a symlink mid-operation cannot redirect I/O out of
the root. Symlinks that stay inside the root are followed for explicit paths; a listing reports
links as links (``lstat``), and the copy engine decides what to do with them.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import stat as statmod
import threading
from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import asynccontextmanager
from typing import TypeVar

import structlog

from aftd import executors
from aftd.errors import TransferError
from aftd.vfs.base import (
    VERIFIED_READ_BACK,
    Features,
    FileInfo,
    PathExistsError,
    ReadStream,
    StreamDigests,
    Vfs,
    WriteStream,
    fail,
    mismatch,
)
from aftd.vfs.config import VfsConfig
from aftd.vfs.confine import Resolver
from aftd.vfs.local_errors import os_error
from aftd.vfs.local_streams import LocalReader, LocalWriter
from aftd.vfs.paths import join, normalize

__all__ = ["LocalVfs", "create"]

T = TypeVar("T")
log = structlog.get_logger(__name__)
DEFAULT_CHUNK = 4 * 261_120  # a multiple of the SFTP request size, so chunks split evenly
_DIR = os.O_PATH | os.O_DIRECTORY
# O_NONBLOCK: opening a FIFO must not hang a worker thread; regular files ignore the flag.
_READ = os.O_RDONLY | os.O_NONBLOCK
_WRITE = os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK


class LocalVfs(Vfs):
    features = Features(checksums=("sha256",), resumable_write=True, local_path=True,
                        ranged_write=True)

    def __init__(self, name: str, root: str, *, chunk_size: int = DEFAULT_CHUNK,
                 resolve: str = "auto") -> None:
        super().__init__(name)
        self.root = os.path.realpath(root)
        self.chunk_size = chunk_size
        self._resolve = resolve
        self._resolver: Resolver | None = None
        self._lock = threading.Lock()

    # -- paths ---------------------------------------------------------------------------
    def rel(self, path: str) -> str:
        return normalize(self.name, self.root, path)

    @property
    def resolver(self) -> Resolver:
        """Chosen at first use, and logged, so an operator can see which method confines."""
        with self._lock:
            if self._resolver is None:
                try:
                    self._resolver = Resolver(self.root, self._resolve)
                except (OSError, ValueError) as exc:
                    raise fail(TransferError, self.name, "", f"cannot confine paths: {exc}") \
                        from None
                log.info("vfs_confinement", vfs=self.name, root=self.root,
                         method=self._resolver.method)
            return self._resolver

    def _open(self, rel: str, flags: int, mode: int = 0o644, *, follow: bool = True) -> int:
        return self.resolver.open(rel, flags, mode, follow=follow)

    def _parent(self, rel: str) -> tuple[int, str]:
        return self.resolver.open_parent(rel)

    async def _run(self, path: str, fn: Callable[[str], T]) -> T:
        rel = self.rel(path)
        try:
            return await executors.run(executors.FILE_IO, fn, rel)
        except TransferError:
            raise
        except OSError as exc:
            raise os_error(self.name, rel, exc) from None

    async def _run_open(self, rel: str, fn: Callable[[str], T], fd_of: Callable[[T], int]) -> T:
        """:meth:`_run` for a call that opens a descriptor: if the caller is cancelled while
        the thread works, the descriptor it opens is closed instead of leaked."""
        fut = executors.get(executors.FILE_IO).submit(fn, rel)
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            fut.add_done_callback(lambda f: _close_result(f, fd_of))
            raise
        except OSError as exc:
            raise os_error(self.name, rel, exc) from None

    # -- descriptors (also used by the copy engine's kernel copy, on a file_io thread) -----
    def reader_fd(self, path: str) -> tuple[int, int]:
        """A descriptor of the regular file ``path`` opened for reading, and its size."""
        rel = self.rel(path)
        try:
            fd = self._open(rel, _READ)
        except OSError as exc:
            raise os_error(self.name, rel, exc) from None
        return fd, self._regular(fd, rel).st_size

    def writer_fd(self, path: str, *, exclusive: bool = False) -> int:
        """``path`` created (or opened) for writing; a symlink as the last part is refused."""
        rel = self.rel(path)
        try:
            fd = self._open(rel, _WRITE | (os.O_EXCL if exclusive else 0), follow=False)
        except OSError as exc:
            raise os_error(self.name, rel, exc) from None
        self._regular(fd, rel)
        return fd

    def _regular(self, fd: int, rel: str) -> os.stat_result:
        st = os.fstat(fd)
        if not statmod.S_ISREG(st.st_mode):
            os.close(fd)
            kind = "a directory" if statmod.S_ISDIR(st.st_mode) else "not a regular file"
            raise fail(TransferError, self.name, rel, f"is {kind}")
        return st

    # -- operations ----------------------------------------------------------------------
    async def stat(self, path: str) -> FileInfo:
        def op(rel: str) -> FileInfo:
            fd = self._open(rel, os.O_PATH)
            try:
                return _info(rel, os.fstat(fd))
            finally:
                os.close(fd)

        return await self._run(path, op)

    async def identity(self, path: str) -> Hashable:
        def op(rel: str) -> Hashable:
            fd = self._open(rel, os.O_PATH)
            try:
                st = os.fstat(fd)
            finally:
                os.close(fd)
            return (st.st_dev, st.st_ino)

        return await self._run(path, op)

    async def listdir(self, path: str) -> list[FileInfo]:
        return await self._run(path, self._scan)

    def _scan(self, rel: str) -> list[FileInfo]:
        fd = self._open(rel, os.O_RDONLY | os.O_DIRECTORY)
        out = []
        try:
            with os.scandir(fd) as it:
                for e in it:
                    try:  # lstat semantics: a symlink is listed as a symlink, not followed
                        out.append(_info(join(rel, e.name), e.stat(follow_symlinks=False)))
                    except FileNotFoundError:  # vanished since the directory was read
                        continue
        finally:
            os.close(fd)
        return out

    async def makedirs(self, path: str) -> None:
        await self._run(path, self._makedirs)

    def _makedirs(self, rel: str) -> None:
        if self._is_dir(rel):
            return
        parts = rel.split("/")
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            if self._is_dir(prefix):
                continue
            pfd, name = self._parent(prefix)
            try:
                os.mkdir(name, 0o777, dir_fd=pfd)
            except FileExistsError:  # created meanwhile, or not a directory (checked next)
                pass
            finally:
                os.close(pfd)
            os.close(self._open(prefix, _DIR))

    def _is_dir(self, rel: str) -> bool:
        try:
            fd = self._open(rel, _DIR)
        except FileNotFoundError:
            return False
        os.close(fd)
        return True

    async def remove(self, path: str) -> None:
        def rm(rel: str) -> None:
            pfd, name = self._parent(rel)
            try:
                st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
                if statmod.S_ISDIR(st.st_mode):
                    os.rmdir(name, dir_fd=pfd)
                else:
                    os.unlink(name, dir_fd=pfd)
            finally:
                os.close(pfd)

        await self._run(path, rm)

    async def rename(self, src: str, dst: str, *, overwrite: bool = False) -> None:
        d = self.rel(dst)

        def mv(s: str) -> None:
            sfd, sname = self._parent(s)
            try:
                try:
                    dfd, dname = self._parent(d)
                except OSError as exc:
                    raise os_error(self.name, d, exc) from None
                try:
                    self._rename_at(sfd, sname, dfd, dname, d, overwrite)
                finally:
                    os.close(dfd)
            finally:
                os.close(sfd)

        await self._run(src, mv)

    def _rename_at(self, sfd: int, sname: str, dfd: int, dname: str, d: str,
                   overwrite: bool) -> None:
        if overwrite:
            os.replace(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd)
            return
        try:  # link+unlink refuses an existing target atomically, unlike rename(2)
            os.link(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd, follow_symlinks=False)
        except FileExistsError:
            raise fail(PathExistsError, self.name, d, "target exists") from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP):
                raise
            if _lexists(dname, dfd):
                raise fail(PathExistsError, self.name, d, "target exists") from None
            os.rename(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd)
            return
        os.unlink(sname, dir_fd=sfd)

    async def set_mtime(self, path: str, mtime: float) -> None:
        def op(rel: str) -> None:
            fd = self._open(rel, _READ)
            try:
                os.utime(fd, (mtime, mtime))
            finally:
                os.close(fd)

        await self._run(path, op)

    async def checksum(self, path: str, algo: str) -> str:
        if algo != "sha256":
            return await super().checksum(path, algo)
        return await self._run(path, lambda rel: sha256_fd(self.reader_fd(rel)[0]))

    async def verify_stored(self, path: str, expected: StreamDigests,
                            receipt: object | None) -> str:
        """Read the file back (on a file_io thread, through the page cache) and compare."""
        got = await self.checksum(path, "sha256")
        if got != expected.sha256:
            raise mismatch(self.name, self.rel(path), expected.sha256, got)
        return VERIFIED_READ_BACK

    @asynccontextmanager
    async def open_read(self, path: str, offset: int = 0) -> AsyncIterator[ReadStream]:
        rel = self.rel(path)
        fd, size = await self._run_open(rel, self.reader_fd, lambda r: r[0])
        try:
            yield LocalReader(self, rel, fd, offset, size)
        finally:
            os.close(fd)

    @asynccontextmanager
    async def open_write(self, path: str, offset: int = 0, *, mtime: float | None = None,
                         size: int | None = None, verify: bool = False,
                         ) -> AsyncIterator[WriteStream]:
        rel = self.rel(path)

        def op(r: str) -> int:
            fd = self.writer_fd(r)
            # Only truncate when needed: on ext4 truncating a file makes close() flush it.
            try:
                if os.fstat(fd).st_size != offset:
                    os.ftruncate(fd, offset)
            except BaseException:
                os.close(fd)
                raise
            return fd

        fd = await self._run_open(rel, op, lambda r: r)
        async with self._writer(rel, fd, offset) as writer:
            yield writer

    @asynccontextmanager
    async def open_write_range(self, path: str, offset: int) -> AsyncIterator[WriteStream]:
        """Write into the existing file from ``offset``; never truncates (ranged streams)."""
        rel = self.rel(path)
        fd = await self._run_open(rel, self.writer_fd, lambda r: r)
        async with self._writer(rel, fd, offset) as writer:
            yield writer

    @asynccontextmanager
    async def _writer(self, rel: str, fd: int, offset: int) -> AsyncIterator[LocalWriter]:
        """A writer on ``fd`` from ``offset``, flushed when the block ends; ``fd`` is closed."""
        try:
            writer = LocalWriter(self, rel, fd, offset)
            yield writer
            await writer.flush()
        finally:
            os.close(fd)


def sha256_fd(fd: int) -> str:
    """The SHA-256 of an open file (the descriptor is closed)."""
    with open(fd, "rb", closefd=True) as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _close_result(fut: asyncio.Future[T], fd_of: Callable[[T], int]) -> None:
    if not fut.cancelled() and fut.exception() is None:
        os.close(fd_of(fut.result()))


def _lexists(name: str, dir_fd: int) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _info(rel: str, st: os.stat_result) -> FileInfo:
    mode = st.st_mode
    return FileInfo(path=rel, size=st.st_size, mtime=st.st_mtime, is_dir=statmod.S_ISDIR(mode),
                    mode=statmod.S_IMODE(mode), is_link=statmod.S_ISLNK(mode),
                    special=not (statmod.S_ISREG(mode) or statmod.S_ISDIR(mode)
                                 or statmod.S_ISLNK(mode)))


def create(cfg: VfsConfig) -> LocalVfs:
    chunk = int(cfg.options.get("chunk_size", DEFAULT_CHUNK))
    return LocalVfs(cfg.name, cfg.root, chunk_size=chunk)
