"""Streaming uploads to Azure Blob Storage that publish only when complete.

A file of up to 1 MiB goes up in one Put Blob request. A larger one is staged as blocks
(``max_blocks_in_flight`` at once, each retried by the SDK) and becomes a blob only when the
block list is committed at the end. A failed or cancelled upload commits nothing, and removes
what it staged: blocks staged under a name that has no committed blob form an "uncommitted
blob" (listed only with ``include=uncommittedblobs``), which Delete Blob removes. Under a name
that already holds a blob, deleting would delete that blob: there the staged blocks stay
attached to it, invisible, until the next commit to the name drops them or Azure expires them
after seven days (there is no call that deletes only uncommitted blocks). Block IDs carry a
random tag per upload, so two uploads racing for one name cannot mix their blocks.

With ``checksum`` on (the default) every request carries the MD5 of its bytes, which the server
checks before accepting them (a transactional ``Content-MD5``), and the blob gets the MD5 of the
whole file, computed while streaming, as its ``Content-MD5`` (set with the commit; Put Blob
computes it itself). That is what ``verify="sha256"`` relies on (``aftd.vfs.azure``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import secrets
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError
from azure.storage.blob import BlobBlock, ContentSettings
from azure.storage.blob.aio import BlobClient

from aftd.errors import TransferError
from aftd.vfs.azure_conn import AzureOptions, error_code
from aftd.vfs.base import TransientError, fail
from aftd.vfs.objtime import MTIME_KEY, format_rfc3339
from aftd.vfs.pieces import Pieces

__all__ = ["BLOCK_GROWTH_EVERY", "MAX_BLOCK", "SINGLE_PUT_MAX", "AzureWriter", "block_size"]

# Azure allows 50,000 committed blocks of at most 4,000 MiB: blocks double in size every
# 10,000, so a file never runs out of them whatever its size.
BLOCK_GROWTH_EVERY = 10_000
MAX_BLOCK = 4000 << 20
# A file up to this size goes in one Put Blob request; a larger one as blocks even when it fits
# in one: the SDK hands a single request's body to aiohttp as bytes, which aiohttp sends in one
# write (and warns about above 1 MiB), while staged blocks are streamed.
SINGLE_PUT_MAX = 1 << 20
_CLEANUP_S = 15.0  # at most this long removing a failed upload's staged blocks
_RECHECK_S = (0.0, 0.25, 0.5, 1.0)  # when to look for them (see _drop_uncommitted)


def block_size(base: int, index: int) -> int:
    """The size of block ``index`` (0-based) of an upload with ``base``-sized blocks."""
    return int(min(base << (index // BLOCK_GROWTH_EVERY), MAX_BLOCK))


class AzureWriter:
    """What ``open_write`` yields for one blob; :meth:`abort` when the context fails."""

    def __init__(self, opts: AzureOptions, blob: BlobClient, rel: str,
                 metadata: dict[str, str],
                 error: Callable[[str, BaseException], TransferError]) -> None:
        self.opts, self.blob, self.rel, self.metadata = opts, blob, rel, metadata
        self.error = error  # turns an SDK exception into aftd's (the VFS's translation)
        self.md5 = hashlib.md5(usedforsecurity=False) if opts.checksum else None
        self.buf = Pieces()
        self.tag = secrets.token_hex(6)
        self.ids: list[str] = []
        self.sizes: list[int] = []
        self.done: list[bool] = []
        self.inflight: set[asyncio.Task[None]] = set()
        self.receipt: dict[str, Any] | None = None
        self._confirmed = 0  # bytes of the blocks staged without a gap from the start
        self._prefix = 0

    @property
    def confirmed(self) -> int:
        return self._confirmed

    async def write(self, data: bytes) -> None:
        if self.md5 is not None:
            self.md5.update(data)
        self.buf.add(data)
        # Strictly more than a block: a file of exactly one block still goes in one request.
        while self.buf.size > (size := block_size(self.opts.block_size, len(self.ids))):
            await self._stage(self.buf.take(size))

    async def flush(self) -> None:
        await self._drain(0)

    async def finish(self, mtime: float | None) -> int:
        if mtime is not None:  # metadata goes with the commit (or the single request)
            self.metadata.setdefault(MTIME_KEY, format_rfc3339(mtime))
        tail = self.buf.take_all()
        total = sum(self.sizes) + len(tail)
        try:
            if not self.ids and len(tail) <= SINGLE_PUT_MAX:
                await self._put_whole(tail)
            else:
                if tail:
                    await self._stage(tail)
                await self._drain(0)
                await self._commit()
        except AzureError as exc:
            raise self.error(self.rel, exc) from None
        self._confirmed = total
        return total

    async def abort(self) -> None:
        """Stop staging; what was staged is never committed, and is removed where it can be
        (see the module docstring). Never raises: the caller re-raises the original failure."""
        for task in self.inflight:
            task.cancel()
        with suppress(BaseException):
            await asyncio.gather(*self.inflight, return_exceptions=True)
        self.inflight.clear()
        if self.ids and self.receipt is None:
            # Shielded and bounded: a cancelled copy still cleans up, a dead server does not
            # hold the failure up for the SDK's retries.
            with suppress(Exception, asyncio.CancelledError):
                await asyncio.shield(asyncio.wait_for(self._drop_uncommitted(), _CLEANUP_S))

    async def _drop_uncommitted(self) -> None:
        """Delete the name's uncommitted blob, unless a committed blob holds the name (between
        the check and the delete another writer could commit; the window is one round trip).
        A block the server had fully received before its request was cancelled can be staged
        after a first delete, so the name is looked at again a few times."""
        for delay in _RECHECK_S:
            await asyncio.sleep(delay)
            try:
                await self.blob.get_blob_properties()
                return  # a committed blob: the staged blocks wait for its next commit or expire
            except ResourceNotFoundError as exc:
                if error_code(exc) == "ContainerNotFound":
                    return
            try:
                await self.blob.get_block_list("uncommitted")
            except ResourceNotFoundError:
                continue  # nothing staged (yet)
            with suppress(ResourceNotFoundError):
                await self.blob.delete_blob()

    # -- requests ------------------------------------------------------------------------------
    async def _put_whole(self, body: bytes) -> None:
        resp = await self.blob.upload_blob(body, length=len(body), overwrite=True,
                                           metadata=self.metadata,
                                           validate_content=self.opts.checksum)
        self.receipt = {"how": "single", "md5": self._md5(),
                        "server_md5": _hex(resp.get("content_md5"))}

    async def _commit(self) -> None:
        digest = self.md5.digest() if self.md5 is not None else None
        settings = ContentSettings(content_md5=bytearray(digest)) if digest else None
        try:
            await self.blob.commit_block_list([BlobBlock(block_id=i) for i in self.ids],
                                              content_settings=settings, metadata=self.metadata)
        except HttpResponseError as exc:
            if error_code(exc) != "InvalidBlockList":
                raise
            # The server lost blocks it had acknowledged (an emulator restarted); nothing was
            # published, and uploading the file again is safe.
            raise fail(TransientError, self.opts.vfs, self.rel,
                       "the server no longer holds every staged block") from None
        self.receipt = {"how": "blocks", "md5": self._md5(), "server_md5": None}

    def _md5(self) -> str | None:
        return self.md5.hexdigest() if self.md5 is not None else None

    async def _stage(self, piece: bytes) -> None:
        await self._drain(self.opts.max_blocks_in_flight - 1)
        index = len(self.ids)
        block_id = base64.b64encode(f"{self.tag}-{index:06d}".encode()).decode()
        self.ids.append(block_id)
        self.sizes.append(len(piece))
        self.done.append(False)
        task = asyncio.ensure_future(self._stage_one(index, block_id, piece))
        self.inflight.add(task)

    async def _stage_one(self, index: int, block_id: str, piece: bytes) -> None:
        try:
            # A stream, not bytes: aiohttp then sends it in 256 KiB writes (and does not warn
            # that a large bytes body might hold the event loop up).
            await self.blob.stage_block(block_id, io.BytesIO(piece), length=len(piece),
                                        validate_content=self.opts.checksum)
        except AzureError as exc:
            raise self.error(self.rel, exc) from None
        self.done[index] = True
        while self._prefix < len(self.done) and self.done[self._prefix]:
            self._confirmed += self.sizes[self._prefix]
            self._prefix += 1

    async def _drain(self, keep: int) -> None:
        """Wait until at most ``keep`` blocks are in flight; raises the first failure."""
        while len(self.inflight) > keep:
            finished, _ = await asyncio.wait(self.inflight, return_when=asyncio.FIRST_COMPLETED)
            for task in finished:
                self.inflight.discard(task)
                task.result()


def _hex(value: object) -> str | None:
    return bytes(value).hex() if isinstance(value, bytes | bytearray) else None
