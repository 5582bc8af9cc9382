"""Streaming uploads to Google Cloud Storage that publish only when complete.

A file that fits in one chunk goes in one ``multipart`` request (metadata and bytes together).
A larger one opens a *resumable upload session* and sends ``chunk_size`` pieces (multiples of
256 KiB) one after another, each ``Content-Range: bytes A-B/*``; the last names the total and
finalises the object, whose metadata (with the server's ``md5Hash`` and ``crc32c``) comes back
as the receipt. Until then no object exists under the name. While one chunk travels the next is
filled, so memory is about two chunks.

Failures: a chunk whose connection could not even be opened is sent again as it was. Any other
failure of a chunk on Google asks the session how much it holds (a status query, the documented
recovery) and resumes from there. fake-gcs-server finalises the object on a status query, so
against an emulator endpoint the session is cancelled instead and the copy restarts the file
(:class:`TransientError`). A failed or cancelled upload cancels its session (``DELETE``), which
leaves no object.
"""

from __future__ import annotations

import asyncio
import json
import re
from contextlib import suppress
from typing import Any

import aiohttp

from aftd.errors import TransferError
from aftd.vfs.base import TransientError, fail
from aftd.vfs.gcs_api import GcsApi, backoff, body_of, reason
from aftd.vfs.objtime import GSUTIL_MTIME_KEY, MTIME_KEY, format_rfc3339
from aftd.vfs.pieces import Pieces

__all__ = ["GcsWriter", "mtime_metadata", "persisted_end"]

_RANGE = re.compile(r"^bytes=0-(\d+)$")
# The connection was never made: nothing of the request reached the server.
_NOT_SENT = (aiohttp.ClientConnectorError,)
_LOST = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, aiohttp.ClientPayloadError,
         ConnectionError, TimeoutError)


def mtime_metadata(mtime: float) -> dict[str, str]:
    """What rclone writes: RFC 3339 under ``mtime``, and gsutil's whole seconds."""
    return {MTIME_KEY: format_rfc3339(mtime), GSUTIL_MTIME_KEY: str(int(mtime))}


def persisted_end(range_header: str | None) -> int:
    """How many bytes a session holds, from a 308's ``Range: bytes=0-N`` (none: 0)."""
    if not range_header:
        return 0
    m = _RANGE.match(range_header.strip())
    if m is None:
        raise ValueError(f"unexpected Range header {range_header!r}")
    return int(m.group(1)) + 1


class GcsWriter:
    """What ``open_write`` yields for one object; :meth:`abort` when the context fails."""

    def __init__(self, api: GcsApi, key: str, rel: str, chunk: int,
                 metadata: dict[str, str]) -> None:
        self.api, self.key, self.rel, self.chunk = api, key, rel, chunk
        self.metadata = metadata
        self.buf = Pieces()
        self.sent = 0  # bytes handed to the session (confirmed or in flight)
        self._confirmed = 0
        self.session_uri = ""
        self.inflight: asyncio.Task[None] | None = None
        self.receipt: dict[str, Any] | None = None

    @property
    def confirmed(self) -> int:
        return self._confirmed

    async def write(self, data: bytes) -> None:
        self.buf.add(data)
        while self.buf.size >= self.chunk + 1:  # keep >= 1 byte back for the final request
            await self._settle()
            piece = self.buf.take(self.chunk)
            if not self.session_uri:
                self.session_uri = await self._start()
            self.inflight = asyncio.ensure_future(self._put(piece, self.sent, None))
            self.sent += len(piece)

    async def flush(self) -> None:
        await self._settle()

    async def finish(self, mtime: float | None) -> int:
        await self._settle()
        late = mtime if mtime is not None and MTIME_KEY not in self.metadata else None
        if late is not None:  # unknown when the upload started: with the object if still to come
            self.metadata.update(mtime_metadata(late))
        total = self.sent + self.buf.size
        if not self.session_uri:
            self.receipt = await self._single(self.buf.take_all())
        else:
            await self._put(self.buf.take_all(), self.sent, total)
            if late is not None:  # the session fixed the metadata when it opened
                await self.api.call("PATCH", self.api.object_url(self.key), self.rel,
                                    json_body={"metadata": self.metadata})
        self._confirmed = total
        return int(self.receipt["size"]) if self.receipt else -1

    async def abort(self) -> None:
        """Cancel what is in flight and the session: the server drops what it had."""
        if self.inflight is not None:
            self.inflight.cancel()
            with suppress(BaseException):
                await self.inflight
            self.inflight = None
        if self.session_uri:
            uri, self.session_uri = self.session_uri, ""
            # Shielded: a cancelled copy must still cancel its session.
            with suppress(Exception, asyncio.CancelledError):
                await asyncio.shield(self._cancel_session(uri))

    async def _cancel_session(self, uri: str) -> None:
        async with self.api.session.delete(uri, headers=await self.api.headers()):
            pass  # 499 "client closed request" is the documented answer

    async def _settle(self) -> None:
        if self.inflight is not None:
            task, self.inflight = self.inflight, None
            await task

    # -- requests ------------------------------------------------------------------------------
    async def _single(self, body: bytes) -> dict[str, Any]:
        return await self.api.upload_whole(self.key, self.rel, self.metadata, body)

    async def _start(self) -> str:
        return await self.api.open_session(self.key, self.rel, self.metadata)

    async def _put(self, piece: bytes, start: int, total: int | None) -> None:
        """Send ``piece`` at ``start``; ``total`` set: the last request, which finalises."""
        attempt = 0
        while True:
            try:
                await self._send(piece, start, total)
                self._confirmed = start + len(piece)
                return
            except _NOT_SENT as exc:
                err: TransferError = self.api.lost(self.rel, exc)
            except (*_LOST, TransientError) as exc:
                err = exc if isinstance(exc, TransferError) else self.api.lost(self.rel, exc)
                if self.api.opts.emulator:
                    raise err from None  # no status query: see the module docstring
                held = await self._held()
                if not start <= held <= start + len(piece):
                    raise err from None
                piece, start = piece[held - start:], held
            attempt += 1
            if attempt > self.api.opts.retries:
                raise err
            await asyncio.sleep(backoff(attempt))

    async def _send(self, piece: bytes, start: int, total: int | None) -> None:
        """One PUT, confirmed in full (308 up to its end, or the final 200) or an error."""
        end = start + len(piece) - 1
        span = f"bytes {start}-{end}" if piece else "bytes *"
        headers = await self.api.headers(
            {"Content-Range": f"{span}/{total if total is not None else '*'}"})
        async with self.api.session.put(self.session_uri, data=body_of(piece),
                                        headers=headers) as resp:
            body = await resp.read()
            if resp.status in (200, 201) and total is not None:
                self.receipt = dict(json.loads(body))
                return
            if resp.status == 308 and total is None:
                if persisted_end(resp.headers.get("Range")) == end + 1:
                    return
                raise fail(TransientError, self.api.opts.vfs, self.rel,
                           "the upload session kept less than it was sent")
            raise self._session_error(resp.status, body)

    def _session_error(self, status: int, body: bytes) -> TransferError:
        if status in (404, 410):  # the session expired, or the server lost it (restarted)
            return fail(TransientError, self.api.opts.vfs, self.rel,
                        f"the upload session is gone (HTTP {status})")
        return self.api.error(status, self.rel, reason(body))

    async def _held(self) -> int:
        """Ask the session how many bytes it holds (Google only: see the module docstring)."""
        headers = await self.api.headers({"Content-Range": "bytes */*"})
        async with self.api.session.put(self.session_uri, headers=headers) as resp:
            body = await resp.read()
            if resp.status == 308:
                return persisted_end(resp.headers.get("Range"))
            raise self._session_error(resp.status, body)
