"""``ftp``: a directory tree on an FTP server, over explicit or implicit TLS (FTPS) or, only when
the config says ``tls = "none"``, plain FTP.

The protocol work is the standard library's ``ftplib`` on a bounded pool of threads (why:
:mod:`aftd.vfs.ftp_client`); connections are pooled per VFS (:mod:`aftd.vfs.ftp_pool`);
transfers stream through bounded hand-overs (:mod:`aftd.vfs.ftp_stream`).

Paths are confined like every backend's (README, "Invariants"): relative to the root, ``..``
may not climb out, absolute paths only under the root. FTP adds its own hazards, refused before
anything is sent (:mod:`aftd.vfs.ftp_names`).
"""

from __future__ import annotations

import dataclasses
import ftplib
import posixpath
import secrets as pysecrets
from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, TypeVar

import structlog

from aftd.errors import TransferError
from aftd.secrets.base import SecretResolver
from aftd.vfs import ftp_ops as ops
from aftd.vfs.base import (
    VERIFIED_READ_BACK,
    VERIFIED_REMOTE_SHA256,
    Features,
    FileInfo,
    PathExistsError,
    PathNotFoundError,
    ReadPin,
    ReadStream,
    StreamDigests,
    Vfs,
    WriteStream,
    fail,
    mismatch,
)
from aftd.vfs.config import VfsConfig
from aftd.vfs.ftp_client import CONNECTION_ERRORS, FtpClient
from aftd.vfs.ftp_errors import ftp_error
from aftd.vfs.ftp_links import LinkMap
from aftd.vfs.ftp_list import Entry
from aftd.vfs.ftp_names import refuse_unsafe, safe_name
from aftd.vfs.ftp_pool import FtpPool
from aftd.vfs.ftp_stream import FtpReader, FtpWriter, Opener
from aftd.vfs.paths import join, normalize, parent, to_abs

__all__ = ["FtpVfs", "create"]

T = TypeVar("T")
log = structlog.get_logger(__name__)


class FtpVfs(Vfs):
    features = Features(checksums=("sha256",), resumable_write=True, set_mtime=True,
                        blocking_read=True, blocking_write=True)

    def __init__(self, name: str, root: str, opts: dict[str, Any],
                 secrets: SecretResolver) -> None:
        super().__init__(name)
        self.opts = opts
        self.pool = FtpPool(name, opts, secrets)
        self._root_cfg = root
        self._root = posixpath.normpath(root) if root.startswith("/") else ""
        self._links = LinkMap(name)  # targets of the symlinks listings showed
        self._mtime_warned = False

    # -- paths ------------------------------------------------------------------------------
    async def root(self) -> str:
        """The absolute root; an empty or relative root is resolved against the login dir."""
        if not self._root:
            await self._call("", _nothing)  # the first login learns the login directory
            base = self.pool.login_dir or "/"
            self._root = posixpath.normpath(posixpath.join(base, self._root_cfg))
        return self._root

    async def _abs(self, path: str) -> tuple[str, str]:
        refuse_unsafe(self.name, path)
        root = await self.root()
        rel = normalize(self.name, root, path)
        return rel, to_abs(root, rel)

    # -- running calls ------------------------------------------------------------------------
    async def _call(self, rel: str, fn: Callable[..., T], *args: Any) -> T:
        """One blocking call on a pooled connection; once more on a fresh connection if the
        leased one turned out to be dead (the server dropped an idle connection)."""
        for attempt in (1, 2):
            try:
                async with self.pool.lease() as conn:
                    return await self.pool.run(conn, fn, *args)
            except CONNECTION_ERRORS as exc:
                if attempt == 2:
                    raise self._error(rel, exc) from None
            except TransferError:
                raise
            except Exception as exc:
                raise self._error(rel, exc) from None
        raise AssertionError("unreachable")

    def _error(self, rel: str, exc: BaseException) -> TransferError:
        return ftp_error(self.name, rel, exc)

    async def _open_error(self, rel: str, exc: BaseException, *, writing: bool) -> TransferError:
        """A refused RETR/STOR: tell a missing file (or directory) from other refusals."""
        if isinstance(exc, ftplib.error_perm) and str(exc).startswith("55"):
            missing = parent(rel) if writing else rel
            if not await self._exists(missing):
                what = "no such directory" if writing else "no such file or directory"
                if writing and not missing:
                    what = f"the VFS root {await self.root()} does not exist"
                return fail(PathNotFoundError, self.name, rel, what)
        return self._error(rel, exc)

    async def _exists(self, rel: str) -> bool:
        try:
            await self.stat(rel)
        except PathNotFoundError:
            return False
        return True

    async def aclose(self) -> None:
        await self.pool.aclose()

    # -- metadata ---------------------------------------------------------------------------
    async def stat(self, path: str) -> FileInfo:
        rel, full = await self._abs(path)
        entry = await self._call(rel, ops.stat, full, rel.rsplit("/", 1)[-1])
        return self._info(rel, entry)

    async def listdir(self, path: str) -> list[FileInfo]:
        rel, full = await self._abs(path)
        out = []
        for e in await self._call(rel, ops.list_dir, full):
            if not safe_name(e.name):
                log.warning("ftp_listing_name_refused", vfs=self.name, path=rel, name=e.name)
                continue
            child = join(rel, e.name)
            if e.kind == "link":
                self._links.remember(child, e.target)
            out.append(self._info(child, e))
        return out

    def _info(self, rel: str, e: Entry) -> FileInfo:
        return FileInfo(path=rel, size=e.size, mtime=e.mtime or 0.0, is_dir=e.kind == "dir",
                        mode=e.mode, is_link=e.kind == "link", special=e.kind == "special")

    async def makedirs(self, path: str) -> None:
        rel, _ = await self._abs(path)
        if rel:
            await self._call(rel, ops.makedirs, await self.root(), rel.split("/"))

    async def remove(self, path: str) -> None:
        rel, full = await self._abs(path)
        await self._call(rel, ops.remove, full)

    async def rename(self, src: str, dst: str, *, overwrite: bool = False) -> None:
        srel, sfull = await self._abs(src)
        drel, dfull = await self._abs(dst)
        try:
            await self._call(srel, ops.rename, sfull, dfull, overwrite)
        except PathExistsError:
            raise fail(PathExistsError, self.name, drel, "target exists") from None

    async def set_mtime(self, path: str, mtime: float) -> None:
        rel, full = await self._abs(path)
        if not await self._call(rel, ops.set_mtime, full, mtime):
            self._warn_mtime(rel)

    def _warn_mtime(self, rel: str) -> None:
        if not self._mtime_warned:
            self._mtime_warned = True
            log.warning("ftp_mtime_not_preserved", vfs=self.name, path=rel,
                        reason="the server offers neither MFMT nor MDTM with a time")

    async def checksum(self, path: str, algo: str) -> str:
        """SHA-256 of what the server stored: by the server where FEAT offers HASH or XSHA256,
        else by reading the file back."""
        if algo != "sha256":
            return await super().checksum(path, algo)
        rel, full = await self._abs(path)
        if await self.verified_by() == VERIFIED_REMOTE_SHA256:
            return await self._call(rel, ops.server_hash, full)
        return await self._read_back(rel, full)

    async def verify_stored(self, path: str, expected: StreamDigests,
                            receipt: object | None) -> str:
        """The server's HASH/XSHA256 where offered, else (or when it disagrees) a read-back."""
        rel, full = await self._abs(path)
        if (await self.verified_by() == VERIFIED_REMOTE_SHA256
                and await self._call(rel, ops.server_hash, full) == expected.sha256):
            return VERIFIED_REMOTE_SHA256
        got = await self._read_back(rel, full)
        if got != expected.sha256:
            raise mismatch(self.name, rel, expected.sha256, got)
        return VERIFIED_READ_BACK

    async def _read_back(self, rel: str, full: str) -> str:
        # Hashed on the transfer's own thread: no chunk crosses to the event loop.
        return await self._call(rel, ops.read_back_sha256, full, self.opts["block_size"])

    async def verified_by(self) -> str:
        """How a stored file is checked: ``remote-sha256`` (the server's HASH or XSHA256) or
        ``read-back``."""
        if self.pool.features is None:
            await self._call("", _nothing)
        assert self.pool.features is not None
        return VERIFIED_REMOTE_SHA256 if self.pool.features.sha256_command else VERIFIED_READ_BACK

    async def resume_offset(self, path: str, confirmed: int) -> int:
        """Where an interrupted upload continues: the size the server kept (FTP confirms
        nothing before the end of a transfer, so ``confirmed`` is only a lower bound)."""
        rel, full = await self._abs(path)
        size = await self._call(rel, ops.size_of, full)
        return max(size or 0, 0) if size is not None else 0

    # -- symlinks (for follow_symlinks=True) ---------------------------------------------------
    async def follow_link(self, path: str) -> FileInfo:
        rel, _ = await self._abs(path)
        if rel not in self._links:
            await self.listdir(parent(rel))  # learn the link's target from its listing
        target = self._links.canonical(rel, await self.root())
        info = await self.stat(target)
        return dataclasses.replace(info, path=rel, is_link=False)

    async def identity(self, path: str) -> Hashable:
        rel, _ = await self._abs(path)
        return self._links.canonical(rel, await self.root())

    # -- streams --------------------------------------------------------------------------------
    async def parallel_streams(self, size: int) -> int:
        """``streams`` for a file of at least ``streams_min_size`` (downloads only: FTP has no
        ranged write). Each range but the last is cut at its end, which costs its control
        connection (FTP has no ranged read with an end): the pool opens a new one."""
        if size < self.opts.get("streams_min_size", 64 << 20):
            return 1
        return int(min(self.opts.get("streams", 1), self.opts["max_connections"]))

    @asynccontextmanager
    async def open_read(self, path: str, offset: int = 0) -> AsyncIterator[ReadStream]:
        rel, full = await self._abs(path)

        def opener(c: FtpClient) -> Any:
            return c.ntransfercmd(f"RETR {full}", rest=offset or None)[0]

        for attempt in (1, 2):
            async with self.pool.lease() as conn:
                reader = FtpReader(self.pool, conn, opener, self.opts["block_size"],
                                   lambda exc: self._error(rel, exc))
                if not await self._started(reader, rel, last=attempt == 2, writing=False):
                    continue
                try:
                    yield reader
                finally:
                    await reader.close()
                return

    async def blocking_streams(self, size: int) -> int:
        """Downloads to local disk run on the connections' threads, large files in
        ``streams`` ranges at once."""
        return await self.parallel_streams(size)

    async def read_blocking(self, path: str, offset: int,
                            sink: Callable[[int, memoryview], None], *, end: int | None = None,
                            pin: ReadPin | None = None) -> int:
        """The file from ``offset`` (to ``end``) into ``sink`` on the connection's pool thread
        (a download to local disk: the copy engine's sink writes each chunk in place)."""
        rel, full = await self._abs(path)
        block = self.opts["block_size"]
        if pin is not None:
            pin.learned()  # nothing to pin: FTP has no versions
        if end is None:
            return await self._whole_transfer(rel, False, ops.retr_to_sink, full, offset, block,
                                              sink)
        return await self._whole_transfer(rel, False, ops.retr_range_to_sink, full, offset, end,
                                          block, sink, cut=True)

    @asynccontextmanager
    async def open_write(self, path: str, offset: int = 0, *, mtime: float | None = None,
                         size: int | None = None, verify: bool = False,
                         ) -> AsyncIterator[WriteStream]:
        """Leaving the block normally ends the transfer (with ``mtime`` set, when given) unless
        ``finish`` did; leaving it by an exception cuts the transfer."""
        rel, full = await self._abs(path)
        async with AsyncExitStack() as stack:
            opener = await self._write_opener(stack, rel, full, offset)
            writer = await self._start_writer(stack, rel, full, offset, opener)
            try:
                yield writer
            except BaseException:
                await writer.abort()
                raise
            if not writer.finished:
                await writer.finish(mtime)

    async def write_blocking(self, path: str, offset: int,
                             source: Callable[[int, memoryview], int], *,
                             mtime: float | None) -> int:
        """An upload filled by ``source`` on the connection's pool thread (from local disk: the
        copy engine's source reads each chunk in place)."""
        rel, full = await self._abs(path)
        async with AsyncExitStack() as stack:
            opener = await self._write_opener(stack, rel, full, offset)
            return await self._whole_transfer(rel, True, ops.stor_from_source, opener, offset,
                                              self.opts["block_size"], source,
                                              self._tail(rel, full), mtime)
        raise AssertionError("unreachable")

    async def _whole_transfer(self, rel: str, writing: bool, fn: Callable[..., int],
                              *args: Any, cut: bool = False) -> int:
        """One whole blocking transfer (``fn``) on a leased connection's pool thread. A
        TransferError is the sink's or source's own (local disk failed): the transfer is cut,
        and with it the connection. ``cut``: ``fn`` may cut the transfer, so the connection
        is not used again."""
        async with self.pool.lease() as conn:
            try:
                moved = await self.pool.run(conn, fn, *args)
                conn.broken = conn.broken or cut
                return moved
            except TransferError:
                conn.broken = True
                raise
            except CONNECTION_ERRORS as exc:
                raise self._error(rel, exc) from None
            except Exception as exc:
                conn.broken = True
                raise await self._open_error(rel, exc, writing=writing) from None

    async def _started(self, stream: FtpReader | FtpWriter, rel: str, *, last: bool,
                       writing: bool) -> bool:
        """Start ``stream``'s transfer; False when its connection turned out dead and another
        try is due (not after the ``last``)."""
        try:
            await stream.start()
        except CONNECTION_ERRORS as exc:
            if not last:
                return False
            raise self._error(rel, exc) from None
        except Exception as exc:
            raise await self._open_error(rel, exc, writing=writing) from None
        return True

    async def _start_writer(self, stack: AsyncExitStack, rel: str, full: str, offset: int,
                            opener: Opener) -> FtpWriter:
        for attempt in (1, 2):
            async with AsyncExitStack() as tries:
                conn = await tries.enter_async_context(self.pool.lease())
                writer = FtpWriter(self.pool, conn, opener, offset, self._tail(rel, full),
                                   lambda exc: self._error(rel, exc))
                if not await self._started(writer, rel, last=attempt == 2, writing=True):
                    continue
                stack.push_async_exit(tries.pop_all())
                return writer
        raise AssertionError("unreachable")

    def _tail(self, rel: str, full: str) -> Callable[[FtpClient, float | None, int], int]:
        """After the last byte (on the transfer's thread): the stored size and the mtime, in
        one round trip."""

        def tail(c: FtpClient, mtime: float | None, sent: int) -> int:
            cmd = ops.mtime_command(c, full, mtime) if mtime is not None else None
            asks_size = "SIZE" in c.features.names or not c.features.names
            commands = [f"SIZE {full}"] if asks_size else []
            replies = c.pipeline([*commands, *([cmd] if cmd else [])])
            if mtime is not None and (cmd is None or not ops.mtime_was_set(replies[-1])):
                self._warn_mtime(rel)
            if not asks_size:
                return sent  # no SIZE command: what went out is all we can know
            size = replies[0]
            if isinstance(size, str) and size.startswith("213") and size[4:].strip().isdigit():
                return int(size[4:].strip())
            raise ops.Refused(f"the server did not report the stored size ({size})")

        return tail

    async def _write_opener(self, stack: AsyncExitStack, rel: str, full: str,
                            offset: int) -> Opener:
        if not offset:
            return lambda c: c.ntransfercmd(f"STOR {full}")[0]
        size = await self._call(rel, ops.size_of, full)
        if size is None:
            raise fail(PathNotFoundError, self.name, rel,
                       f"cannot write at offset {offset}: no such file")
        if size < offset:
            raise fail(TransferError, self.name, rel, f"cannot write at offset {offset}: the "
                       f"server holds only {size} bytes")
        if size == offset:
            assert self.pool.features is not None
            if self.pool.features.rest_stream:
                return lambda c: c.ntransfercmd(f"STOR {full}", rest=offset)[0]
            return lambda c: c.ntransfercmd(f"APPE {full}")[0]
        return await self._truncating_opener(stack, rel, full, offset)

    async def _truncating_opener(self, stack: AsyncExitStack, rel: str, full: str,
                                 offset: int) -> Opener:
        """FTP cannot truncate: move the file aside and write its first ``offset`` bytes
        back through a second connection, then go on with the new bytes (rare: a copy
        resumes exactly where the server's copy ends)."""
        backup = posixpath.join(posixpath.dirname(full),
                                f".{posixpath.basename(full)}.{pysecrets.token_hex(4)}.aftd-trunc")
        await self._call(rel, ops.rename, full, backup, False)
        stack.push_async_callback(self._call, rel, ops.remove, backup)
        rconn = await stack.enter_async_context(self.pool.lease())
        rconn.broken = True  # its RETR is cut short: not worth reusing
        block = self.opts["block_size"]

        def opener(c: FtpClient) -> Any:
            data = c.ntransfercmd(f"STOR {full}")[0]
            try:
                ops.copy_prefix(rconn.client, backup, data, offset, block)
            except BaseException:
                data.close()
                raise
            return data

        return opener


def _nothing(c: FtpClient) -> None:
    return None


def create(cfg: VfsConfig, secrets: SecretResolver) -> FtpVfs:
    return FtpVfs(cfg.name, cfg.root, cfg.options, secrets)
