"""``sftp``: a directory tree on an SSH server, through pooled asyncssh connections.

Throughput comes from pipelining: a reader keeps ``requests_in_flight`` read requests of
``block_size`` bytes outstanding, a writer as many writes, so round trips never idle the link.
Requests are at most 261,120 bytes because OpenSSH's sftp-server refuses larger ones.
"""

from __future__ import annotations

import asyncio
import posixpath
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any, TypeVar

import asyncssh

from aftd.errors import TransferError
from aftd.vfs.base import (
    Features,
    FileInfo,
    PathExistsError,
    PathNotFoundError,
    ReadStream,
    SecretResolver,
    TransientError,
    Vfs,
    WriteStream,
    fail,
)
from aftd.vfs.config import VfsConfig
from aftd.vfs.paths import join, normalize, to_abs
from aftd.vfs.sftp_conn import SftpPool

__all__ = ["SftpVfs", "create"]

T = TypeVar("T")
_LOST = (asyncssh.SFTPConnectionLost, asyncssh.SFTPNoConnection, asyncssh.ConnectionLost,
         asyncssh.DisconnectError, asyncssh.ChannelOpenError, BrokenPipeError,
         ConnectionError)


class SftpVfs(Vfs):
    features = Features(atomic_rename_overwrite=True, resumable_write=True)

    def __init__(self, name: str, root: str, opts: dict[str, Any],
                 secrets: SecretResolver) -> None:
        super().__init__(name)
        self.opts = opts
        self.pool = SftpPool(name, opts, secrets)
        self._root = root if root.startswith("/") else ""
        self._root_cfg = root

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
            except _LOST as exc:
                self.pool.discard_dead()
                if attempt == 2:
                    raise fail(TransientError, self.name, rel, f"connection lost: {exc}") from None
            except (asyncssh.SFTPError, OSError) as exc:
                raise sftp_error(self.name, rel, exc) from None
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        await self.pool.aclose()

    # -- operations ----------------------------------------------------------------------
    async def stat(self, path: str) -> FileInfo:
        rel, full = await self._abs(path)
        attrs = await self._call(rel, lambda s: s.stat(full))
        return _info(rel, attrs)

    async def listdir(self, path: str) -> list[FileInfo]:
        rel, full = await self._abs(path)
        names = await self._call(rel, lambda s: s.readdir(full))
        out = []
        for n in names:
            if n.filename in (".", "..") or not isinstance(n.filename, str):
                continue
            if n.attrs.type == asyncssh.FILEXFER_TYPE_SYMLINK:
                with suppress(PathNotFoundError):  # follow it, like the local backend
                    out.append(await self.stat(join(rel, n.filename)))
                continue
            out.append(_info(join(rel, n.filename), n.attrs))
        return out

    async def makedirs(self, path: str) -> None:
        rel, full = await self._abs(path)
        await self._call(rel, lambda s: s.makedirs(full, exist_ok=True))

    async def remove(self, path: str) -> None:
        rel, full = await self._abs(path)

        async def rm(s: asyncssh.SFTPClient) -> None:
            if await s.isdir(full):
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

    @asynccontextmanager
    async def open_read(self, path: str, offset: int = 0) -> AsyncIterator[ReadStream]:
        rel, full = await self._abs(path)
        async with self._open(rel, full, "rb") as (f, size):
            reader = _PipelinedReader(self, rel, f, offset, size)
            try:
                yield reader
            finally:
                await reader.cancel()

    @asynccontextmanager
    async def open_write(self, path: str, offset: int = 0) -> AsyncIterator[WriteStream]:
        rel, full = await self._abs(path)
        async with self._open(rel, full, "r+b" if offset else "wb", truncate=offset) as (f, _):
            writer = _PipelinedWriter(self, rel, f, offset)
            try:
                yield writer
            except BaseException:
                await writer.cancel()
                raise
            await writer.flush()

    @asynccontextmanager
    async def _open(self, rel: str, full: str, mode: str, truncate: int = 0,
                    ) -> AsyncIterator[tuple[asyncssh.SFTPClientFile, int]]:
        async def op(s: asyncssh.SFTPClient) -> tuple[asyncssh.SFTPClientFile, int]:
            # block_size=0: each read/write is one request sent from the calling task. We split
            # and pipeline ourselves; asyncssh's own splitting would add a task per request.
            f = await s.open(full, mode, block_size=0)
            if truncate:
                await f.truncate(truncate)
            if "r" not in mode or "+" in mode:
                return f, 0  # writers do not need the size: save a round trip
            attrs = await f.stat()
            return f, attrs.size or 0

        async with self.pool.session() as sftp:  # the lease keeps the channel counted as busy
            try:
                f, size = await op(sftp)
            except _LOST as exc:
                self.pool.discard_dead()
                raise fail(TransientError, self.name, rel, f"connection lost: {exc}") from None
            except (asyncssh.SFTPError, OSError) as exc:
                raise sftp_error(self.name, rel, exc) from None
            try:
                yield f, size
            finally:
                with suppress(asyncssh.Error, OSError):
                    await f.close()


class _PipelinedReader:
    """Keeps up to ``requests_in_flight`` reads outstanding, returns them in order.

    Reads stop at the size the file had when opened (bytes appended later are not copied;
    a file that shrank ends early and the copy engine reports it as changed).
    """

    def __init__(self, vfs: SftpVfs, rel: str, f: asyncssh.SFTPClientFile, offset: int,
                 size: int) -> None:
        self.vfs, self.rel, self.f, self.size = vfs, rel, f, size
        self.next_off = self.pos = offset
        self.bs: int = vfs.opts["block_size"]
        self.depth: int = vfs.opts["requests_in_flight"]
        self.pending: deque[tuple[int, asyncio.Future[Any]]] = deque()

    def _fill(self) -> None:
        while len(self.pending) < self.depth and self.next_off < self.size:
            n = min(self.bs, self.size - self.next_off)
            fut = asyncio.ensure_future(self.f.read(n, self.next_off))
            self.pending.append((n, fut))
            self.next_off += n

    async def read(self) -> bytes:
        self._fill()
        if not self.pending:  # the size seen at open is the snapshot we copy
            return b""
        n, fut = self.pending.popleft()
        data = await self._guard(fut)
        if len(data) != n:  # short read or shrunk file: re-plan from where we are
            await self.cancel()
            self.size = self.pos + len(data) if not data else self.size
            self.next_off = self.pos + len(data)
        self.pos += len(data)
        return data

    async def _guard(self, aw: Awaitable[bytes]) -> bytes:
        try:
            return await aw
        except _LOST as exc:
            self.vfs.pool.discard_dead()
            raise fail(TransientError, self.vfs.name, self.rel, f"connection lost: {exc}") from None
        except (asyncssh.SFTPError, OSError) as exc:
            raise sftp_error(self.vfs.name, self.rel, exc) from None

    async def cancel(self) -> None:
        await _cancel_all(fut for _, fut in self.pending)
        self.pending.clear()


class _PipelinedWriter:
    """Keeps up to ``requests_in_flight`` writes outstanding; tracks the acknowledged prefix."""

    def __init__(self, vfs: SftpVfs, rel: str, f: asyncssh.SFTPClientFile, offset: int) -> None:
        self.vfs, self.rel, self.f = vfs, rel, f
        self.off = self._confirmed = offset
        self.bs: int = vfs.opts["block_size"]
        self.depth: int = vfs.opts["requests_in_flight"]
        self.pending: deque[tuple[int, asyncio.Future[Any]]] = deque()

    @property
    def confirmed(self) -> int:
        return self._confirmed

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        for start in range(0, len(view), self.bs):
            piece = view[start:start + self.bs]
            while len(self.pending) >= self.depth:
                await self._settle_oldest()
            # asyncssh builds the request from any bytes-like object: no copy of the slice here.
            fut = asyncio.ensure_future(self.f.write(piece, self.off))  # type: ignore[type-var]
            self.off += len(piece)
            self.pending.append((self.off, fut))

    async def _settle_oldest(self) -> None:
        end, fut = self.pending[0]
        try:
            await fut
        except _LOST as exc:
            self.vfs.pool.discard_dead()
            raise fail(TransientError, self.vfs.name, self.rel, f"connection lost: {exc}") from None
        except (asyncssh.SFTPError, OSError) as exc:
            raise sftp_error(self.vfs.name, self.rel, exc) from None
        self.pending.popleft()
        self._confirmed = end

    async def flush(self) -> None:
        try:
            while self.pending:
                await self._settle_oldest()
        except BaseException:
            await self.cancel()
            raise

    async def finish(self, mtime: float | None) -> int:
        """After the last write is acknowledged, set mtime, stat and close in one round trip.

        sftp-server answers a channel's requests in order, so sending the three together is
        safe. They must not overtake the writes: asyncssh sends a write from a task of its
        own, so only an acknowledged write is known to be ahead of them.
        """
        await self.flush()
        set_time = self.f.utime((mtime, mtime)) if mtime is not None else asyncio.sleep(0)
        tail = asyncio.gather(set_time, self.f.stat(), self.f.close())
        try:
            _, attrs, _ = await tail
        except BaseException as exc:
            tail.cancel()
            with suppress(BaseException):
                await tail
            if isinstance(exc, _LOST):
                self.vfs.pool.discard_dead()
                raise fail(TransientError, self.vfs.name, self.rel,
                           f"connection lost: {exc}") from None
            if isinstance(exc, asyncssh.SFTPError | OSError):
                raise sftp_error(self.vfs.name, self.rel, exc) from None
            raise
        return int(attrs.size or 0)

    async def cancel(self) -> None:
        await _cancel_all(fut for _, fut in self.pending)
        self.pending.clear()


async def _cancel_all(futs: Any) -> None:
    futs = list(futs)
    for fut in futs:
        fut.cancel()
    # Retrieve outcomes so no "exception never retrieved" warning escapes.
    await asyncio.gather(*futs, return_exceptions=True)


def _info(rel: str, attrs: asyncssh.SFTPAttrs) -> FileInfo:
    is_dir = attrs.type == asyncssh.FILEXFER_TYPE_DIRECTORY
    return FileInfo(path=rel, size=attrs.size or 0, mtime=float(attrs.mtime or 0), is_dir=is_dir,
                    mode=(attrs.permissions or 0) & 0o7777)


def sftp_error(vfs: str, rel: str, exc: Exception) -> TransferError:
    if isinstance(exc, asyncssh.SFTPNoSuchFile | FileNotFoundError):
        return fail(PathNotFoundError, vfs, rel, "no such file or directory")
    if isinstance(exc, asyncssh.SFTPFileAlreadyExists | FileExistsError):
        return fail(PathExistsError, vfs, rel, "already exists")
    if isinstance(exc, asyncssh.SFTPPermissionDenied | PermissionError):
        return fail(TransferError, vfs, rel, "permission denied")
    reason = getattr(exc, "reason", "") or str(exc) or type(exc).__name__
    return fail(TransferError, vfs, rel, reason)


def create(cfg: VfsConfig, secrets: SecretResolver) -> SftpVfs:
    return SftpVfs(cfg.name, posixpath.normpath(cfg.root) if cfg.root else "", cfg.options,
                   secrets)
