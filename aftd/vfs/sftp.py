"""``sftp``: a directory tree on an SSH server, through pooled asyncssh connections.

Throughput comes from pipelining (:mod:`aftd.vfs.sftp_pipe`); errors are translated by
:mod:`aftd.vfs.sftp_errors`.
"""

from __future__ import annotations

import asyncio
import posixpath
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import asynccontextmanager, suppress
from typing import Any, TypeVar

import asyncssh

from aftd.secrets.base import SecretResolver
from aftd.vfs import sftp_fastpath
from aftd.vfs.base import (
    Features,
    FileInfo,
    PathEscapeError,
    PathExistsError,
    ReadStream,
    StreamDigests,
    Vfs,
    WriteStream,
    fail,
)
from aftd.vfs.config import VfsConfig
from aftd.vfs.paths import join, normalize, to_abs
from aftd.vfs.sftp_auto import RttMeter, requests_in_flight, stream_count
from aftd.vfs.sftp_conn import SftpPool
from aftd.vfs.sftp_errors import ERRORS, LOST, translate
from aftd.vfs.sftp_hash import RemoteHasher
from aftd.vfs.sftp_pipe import PipelinedReader, PipelinedWriter, close_quietly

__all__ = ["SftpVfs", "create"]

T = TypeVar("T")
# Open for writing, create if missing, keep what is there (no FXF_TRUNC): ranged writers.
_WRITE_CREATE = asyncssh.FXF_WRITE | asyncssh.FXF_CREAT


def _answered(exc: BaseException) -> bool:
    """The server answered (with an error status): the request took one full round trip."""
    return isinstance(exc, asyncssh.SFTPError) and not isinstance(exc, LOST)


# Kinds a tree copy handles; FIFOs, sockets and devices are reported and skipped. UNKNOWN is
# what a server that sends no permissions gives: treat such an entry as a file.
_ORDINARY = (asyncssh.FILEXFER_TYPE_REGULAR, asyncssh.FILEXFER_TYPE_DIRECTORY,
             asyncssh.FILEXFER_TYPE_SYMLINK, asyncssh.FILEXFER_TYPE_UNKNOWN)


class SftpVfs(Vfs):
    features = Features(resumable_write=True, ranged_write=True)

    def __init__(self, name: str, root: str, opts: dict[str, Any],
                 secrets: SecretResolver) -> None:
        super().__init__(name)
        self.opts = opts
        self.pool = SftpPool(name, opts, secrets)
        self._root = root if root.startswith("/") else ""
        self._root_cfg = root
        self._real: str | None = None  # the root with symlinks resolved by the server
        self.hasher = RemoteHasher(self, self.pool, opts.get("sha256sum_command", ""))
        # Single-request timings size the "auto" settings; an error status from the server
        # (no such file, ...) took a full round trip too.
        self.rtt = RttMeter(answered=_answered)
        self._closing: set[asyncio.Future[None]] = set()  # reader handles closing

    def _timed(self, fn: Callable[[asyncssh.SFTPClient], Awaitable[T]],
               ) -> Callable[[asyncssh.SFTPClient], Awaitable[T]]:
        """``fn`` (one SFTP request) with its round trip recorded once the session is there."""
        async def run(s: asyncssh.SFTPClient) -> T:
            with self.rtt.timer():
                return await fn(s)
        return run

    def depth(self, *, writing: bool = False) -> int:
        """Requests a reader or writer keeps outstanding (``requests_in_flight``)."""
        return requests_in_flight(self.opts.get("requests_in_flight", "auto"), self.rtt.rtt,
                                  self.opts["block_size"], writing=writing)

    async def parallel_streams(self, size: int) -> int:
        """``streams``: how many ranged streams a file of ``size`` moves as."""
        setting = self.opts.get("streams", 1)
        min_size = self.opts.get("streams_min_size", 64 << 20)
        if size < min_size:
            return 1
        if setting == "auto" and self.rtt.rtt is None:  # one round trip to learn the path
            root = await self.root()
            await self._call("", self._timed(lambda s: s.stat(root)))
        sessions = self.opts["max_connections"] * self.opts["max_sessions"]
        n = stream_count(setting, self.rtt.rtt, size, min_size, sessions)
        if n > 1:
            self.pool.warm(n)  # the streams' sessions start now, all at once
        return n

    def files_in_flight_cap(self) -> int:
        return int(self.opts.get("max_files_in_flight", 64))

    async def root(self) -> str:
        """The absolute root; a relative (or empty) root is resolved against the login dir."""
        if not self._root:
            base = self._root_cfg or "."
            self._root = await self._call("", lambda s: s.realpath(base))
        return self._root

    async def _abs(self, path: str) -> tuple[str, str]:
        root = await self.root()
        rel = normalize(self.name, root, path)
        return rel, to_abs(root, rel)

    async def _call(self, rel: str, fn: Callable[[asyncssh.SFTPClient], Awaitable[T]]) -> T:
        """Run one operation; reconnect once if the connection dropped since the last one."""
        for attempt in (1, 2):
            try:
                async with self.pool.session() as sftp:
                    return await fn(sftp)
            except ERRORS as exc:
                error = translate(self, rel, exc)
                if attempt == 2 or not isinstance(exc, LOST):
                    raise error from None
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        if self._closing:  # reader handles still closing: let them finish (briefly)
            await asyncio.wait(set(self._closing), timeout=5)
        await self.pool.aclose()

    # -- operations ----------------------------------------------------------------------
    async def stat(self, path: str) -> FileInfo:
        rel, full = await self._abs(path)
        attrs = await self._call(rel, self._timed(lambda s: s.stat(full)))
        return _info(rel, attrs)

    async def listdir(self, path: str) -> list[FileInfo]:
        rel, full = await self._abs(path)
        names = await self._call(rel, lambda s: s.readdir(full))
        # READDIR attributes are the server's lstat: a symlink is listed as a symlink.
        return [_info(join(rel, n.filename), n.attrs) for n in names
                if isinstance(n.filename, str) and n.filename not in (".", "..")]

    async def scandir(self, path: str) -> AsyncIterator[FileInfo]:
        """The listing as the server sends it, a READDIR reply (about 100 names) at a time;
        one session is held until the listing ends. No reconnect midway: a listing restarted
        would repeat entries, so a lost connection is raised to the caller."""
        rel, full = await self._abs(path)
        try:
            async with self.pool.session() as sftp:
                async for n in sftp.scandir(full):
                    if isinstance(n.filename, str) and n.filename not in (".", ".."):
                        yield _info(join(rel, n.filename), n.attrs)
        except ERRORS as exc:
            raise translate(self, rel, exc) from None

    async def follow_link(self, path: str) -> FileInfo:
        """The target of a link, refused when the server resolves it outside the root."""
        rel, full = await self._abs(path)
        real = await self._call(rel, lambda s: s.realpath(full))
        if not _under(real, await self._real_root()):
            raise fail(PathEscapeError, self.name, rel, "a symlink leads outside the VFS root")
        return await self.stat(rel)

    async def identity(self, path: str) -> Hashable:
        """The server's canonical path: equal for a directory and any link that leads to it."""
        rel, full = await self._abs(path)
        return await self._call(rel, lambda s: s.realpath(full))

    async def _real_root(self) -> str:
        if self._real is None:
            root = await self.root()
            self._real = await self._call("", lambda s: s.realpath(root))
        return self._real

    async def makedirs(self, path: str) -> None:
        """The directory first (one round trip when only it is missing), its parents only when
        the server says they are missing."""
        rel, full = await self._abs(path)
        await self._call(rel, lambda s: _makedirs(s, full))

    async def remove(self, path: str) -> None:
        rel, full = await self._abs(path)

        async def rm(s: asyncssh.SFTPClient) -> None:
            attrs = await s.lstat(full)  # a link to a directory is removed as a link
            if attrs.type == asyncssh.FILEXFER_TYPE_DIRECTORY:
                await s.rmdir(full)
            else:
                await s.remove(full)

        await self._call(rel, rm)

    async def rename(self, src: str, dst: str, *, overwrite: bool = False) -> None:
        srel, sfull = await self._abs(src)
        drel, dfull = await self._abs(dst)

        async def mv(s: asyncssh.SFTPClient) -> None:
            if overwrite:
                try:
                    await s.posix_rename(sfull, dfull)  # atomic replace (OpenSSH extension)
                    return
                except asyncssh.SFTPOpUnsupported:  # not OpenSSH: replace in two steps
                    with suppress(asyncssh.SFTPNoSuchFile):
                        await s.remove(dfull)
            try:  # plain SFTP rename refuses an existing target
                await s.rename(sfull, dfull)
            except asyncssh.SFTPFailure:
                if await s.exists(dfull):
                    raise fail(PathExistsError, self.name, drel, "target exists") from None
                raise

        await self._call(srel, mv)

    async def set_mtime(self, path: str, mtime: float) -> None:
        rel, full = await self._abs(path)
        await self._call(rel, lambda s: s.utime(full, (mtime, mtime)))

    async def verify_stored(self, path: str, expected: StreamDigests,
                            receipt: object | None) -> str:
        """``sha256sum`` on the server where it may run commands, else a read-back."""
        rel, full = await self._abs(path)
        return await self.hasher.verify(rel, full, expected)

    @asynccontextmanager
    async def open_read(self, path: str, offset: int = 0) -> AsyncIterator[ReadStream]:
        """Open, then the size and the first block in one round trip (a small file is read
        by then); the handle is closed in the background, as nothing waits on a reader's
        close."""
        rel, full = await self._abs(path)
        async with self.pool.session() as sftp:  # the lease keeps the channel counted as busy
            try:
                with self.rtt.timer():
                    f = await sftp.open(full, "rb", block_size=0)
            except ERRORS as exc:
                raise translate(self, rel, exc) from None
            reader = PipelinedReader(self, rel, f, offset)
            try:
                await reader.start()
                yield reader
            finally:
                await reader.cancel()
                self._close_later(f)

    def _close_later(self, f: asyncssh.SFTPClientFile) -> None:
        task = asyncio.ensure_future(close_quietly(f))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    @asynccontextmanager
    async def open_write(self, path: str, offset: int = 0, *, mtime: float | None = None,
                         size: int | None = None, verify: bool = False,
                         ) -> AsyncIterator[WriteStream]:
        rel, full = await self._abs(path)
        async with self._writer(rel, full, "r+b" if offset else "wb", offset,
                                truncate=offset) as writer:
            yield writer

    @asynccontextmanager
    async def open_write_range(self, path: str, offset: int) -> AsyncIterator[WriteStream]:
        """Write into the file from ``offset`` on a session of its own, creating it when
        missing, never truncating: several of these fill one temporary file at once."""
        rel, full = await self._abs(path)
        async with self._writer(rel, full, _WRITE_CREATE, offset) as writer:
            yield writer

    @asynccontextmanager
    async def _writer(self, rel: str, full: str, mode: str | int, offset: int, *, truncate: int = 0,
                      ) -> AsyncIterator[PipelinedWriter]:
        """A pipelined writer from ``offset``: flushed when the block ends, cancelled when it
        raises."""
        async with self._open(rel, full, mode, truncate=truncate) as (f, _):
            writer = PipelinedWriter(self, rel, f, offset)
            try:
                yield writer
            except BaseException:
                await writer.cancel()
                raise
            await writer.flush()

    @asynccontextmanager
    async def _open(self, rel: str, full: str, mode: str | int, truncate: int = 0,
                    ) -> AsyncIterator[tuple[asyncssh.SFTPClientFile, int]]:
        async def op(s: asyncssh.SFTPClient) -> tuple[asyncssh.SFTPClientFile, int]:
            # block_size=0: each read/write is one request sent from the calling task. We split
            # and pipeline ourselves; asyncssh's own splitting would add a task per request.
            with self.rtt.timer():
                f = await s.open(full, mode, block_size=0, encoding=None)
            if truncate:
                await f.truncate(truncate)
            return f, 0  # writers (readers open in open_read) do not need the size

        async with self.pool.session() as sftp:  # the lease keeps the channel counted as busy
            try:
                f, size = await op(sftp)
            except ERRORS as exc:
                raise translate(self, rel, exc) from None
            try:
                yield f, size
            finally:
                with suppress(asyncssh.Error, OSError):
                    await f.close()


async def _makedirs(s: asyncssh.SFTPClient, full: str) -> None:
    """``mkdir -p`` from the leaf up: asyncssh's makedirs walks down from ``/`` with a mkdir
    (and a stat where it exists) per component, dozens of round trips for a deep path; here a
    new directory whose parent exists costs one."""
    try:
        await s.mkdir(full)
    except asyncssh.SFTPNoSuchFile:
        up = posixpath.dirname(full)
        if up == full:
            raise
        await _makedirs(s, up)
        try:
            await s.mkdir(full)
        except (asyncssh.SFTPFailure, asyncssh.SFTPFileAlreadyExists):
            await _is_dir(s, full)  # another copy made it meanwhile
    except (asyncssh.SFTPFailure, asyncssh.SFTPFileAlreadyExists):
        await _is_dir(s, full)


async def _is_dir(s: asyncssh.SFTPClient, full: str) -> None:
    """After a mkdir the server refused: fine if a directory is there (it existed)."""
    if not await s.isdir(full):
        raise asyncssh.SFTPFailure(f"{full} exists and is not a directory")


def _info(rel: str, attrs: asyncssh.SFTPAttrs) -> FileInfo:
    kind = attrs.type
    return FileInfo(path=rel, size=attrs.size or 0, mtime=float(attrs.mtime or 0),
                    is_dir=kind == asyncssh.FILEXFER_TYPE_DIRECTORY,
                    mode=(attrs.permissions or 0) & 0o7777,
                    is_link=kind == asyncssh.FILEXFER_TYPE_SYMLINK,
                    special=kind not in _ORDINARY)


def _under(path: str, root: str) -> bool:
    root = root.rstrip("/")
    return path == root or path.startswith(root + "/") or root == ""


def create(cfg: VfsConfig, secrets: SecretResolver) -> SftpVfs:
    sftp_fastpath.startup_check()
    return SftpVfs(cfg.name, posixpath.normpath(cfg.root) if cfg.root else "", cfg.options,
                   secrets)
