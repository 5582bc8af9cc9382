"""Reading objects, the same on every object store: a byte range streamed by one GET at a time,
re-issued for the rest after a failure, and pinned to one version of the object.

A backend implements :class:`RangeSource` (one ranged GET: S3 ``GetObject`` with ``Range`` and
``If-Match``, Azure ``Get Blob`` with its ETag, GCS ``alt=media`` with ``ifGenerationMatch``);
:class:`ObjectReader` does the rest. A GET that fails mid-body (connection reset, server
restarted, read timeout) is asked again for the bytes not yet returned, on condition that the
object is still the version the read started on; a changed object fails the read
(:class:`ObjectChanged`) instead of splicing two versions. Memory is one response's buffer.

A large download can be several readers at once, each on its own range, all pinned to the
version the first one saw (:mod:`aftd.vfs.copy_ranges`, the ``streams`` keys).
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import structlog

from aftd.errors import TransferError
from aftd.vfs.base import TransientError, fail

__all__ = ["CHUNK", "RESUME_DELAYS", "EmptyResponse", "ObjectChanged", "ObjectReader",
           "RangeResponse", "RangeSource"]

log = structlog.get_logger(__name__)
CHUNK = 1 << 20  # what one read() returns at most (the copy engine's unit)
# Waits before re-issuing a broken GET (a restarting server needs a few seconds).
RESUME_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)


class ObjectChanged(TransferError):
    """The object is not the version a read started on (replaced or deleted meanwhile)."""


class RangeResponse(Protocol):
    """One ranged GET's answer: what it says of the object, and its body."""

    @property
    def size(self) -> int:
        """The whole object's size."""

    @property
    def version(self) -> str | None:
        """What identifies this version of the object (ETag, generation)."""

    @property
    def mtime(self) -> float | None:
        """The modification time stored in the object's metadata, if any."""

    async def read(self, n: int) -> bytes:
        """Up to about ``n`` bytes more of the body; ``b""`` at its end."""

    async def close(self) -> None:
        """Release the connection (a body not read to its end is dropped)."""


class RangeSource(Protocol):
    """What a backend implements for its objects to be read."""

    @property
    def name(self) -> str:
        """The VFS's name (errors name it)."""

    @property
    def kind(self) -> str:
        """The backend type: log events are ``<kind>_read_resume``."""

    @property
    def read_errors(self) -> tuple[type[BaseException], ...]:
        """Errors a response's ``read`` raises that are worth another GET (besides
        :class:`TransientError`)."""

    async def get_range(self, rel: str, key: str, start: int, end: int | None,
                        version: str | None) -> RangeResponse:
        """One GET of bytes ``[start, end)`` of ``key`` (``end`` None: to its end), on
        condition that it is still ``version`` when one is given (else :class:`ObjectChanged`).
        ``start`` at the object's end is an empty response (:class:`EmptyResponse`), past it
        an error; a missing object is :class:`~aftd.vfs.base.PathNotFoundError`."""


class EmptyResponse:
    """The answer to a GET that starts at the object's end."""

    def __init__(self, size: int, version: str | None, mtime: float | None) -> None:
        self.size, self.version, self.mtime = size, version, mtime

    async def read(self, n: int) -> bytes:
        return b""

    async def close(self) -> None:
        pass


class ObjectReader:
    """Bytes ``[start, end)`` of one object version (``end`` None: to its end), as ``read()``
    chunks; ``version`` pins the first GET already (a range of a download in parts)."""

    def __init__(self, src: RangeSource, rel: str, key: str, start: int = 0,
                 end: int | None = None, version: str | None = None) -> None:
        self.src, self.rel, self.key = src, rel, key
        self.pos, self.end, self.version = start, end, version
        self.mtime: float | None = None
        self.size = 0  # of the whole object, once open
        self.resp: RangeResponse | None = None
        self.opened = False
        self.retry_on: tuple[type[BaseException], ...] = (*src.read_errors, TransientError)

    async def open(self) -> None:
        """The first GET: learns size, version and mtime; a missing object raises here.
        A dropped connection is retried like one in the middle of the body."""
        for delay in (*RESUME_DELAYS, None):
            try:
                await self._get()
                return
            except self.retry_on as exc:
                await self._failed(exc, delay)
        raise AssertionError("unreachable")

    def limit(self, end: int) -> None:
        """Stop at ``end`` (no read past it, even if the open GET asked for more)."""
        self.end = end if self.end is None else min(self.end, end)

    async def read(self) -> bytes:
        for delay in (*RESUME_DELAYS, None):
            if self.pos >= self._stop():
                await self.close()
                return b""
            try:
                if self.resp is None:
                    await self._get()
                assert self.resp is not None
                data = await self.resp.read(min(CHUNK, self._stop() - self.pos))
            except self.retry_on as exc:
                await self._failed(exc, delay)
                continue
            if not data:  # the response ended early without an error: ask for the rest
                await self.close()
                continue
            data = data[:self._stop() - self.pos]
            self.pos += len(data)
            return data
        raise fail(TransientError, self.src.name, self.rel,
                   f"reading stopped at byte {self.pos} of {self._stop()}")

    async def close(self) -> None:
        resp, self.resp = self.resp, None
        if resp is not None:
            await resp.close()

    async def _failed(self, exc: BaseException, delay: float | None) -> None:
        await self.close()
        if delay is None:
            raise fail(TransientError, self.src.name, self.rel,
                       f"reading failed at byte {self.pos}: {exc}") from None
        log.warning(f"{self.src.kind}_read_resume", vfs=self.src.name, path=self.rel,
                    at=self.pos, error=str(exc) or type(exc).__name__, delay_s=delay)
        await asyncio.sleep(delay)

    def _stop(self) -> int:
        return self.size if self.end is None else min(self.end, self.size)

    async def _get(self) -> None:
        resp = await self.src.get_range(self.rel, self.key, self.pos, self.end, self.version)
        if self.version is not None and resp.version is not None \
                and resp.version != self.version:  # a server that ignored the condition
            await resp.close()
            raise fail(ObjectChanged, self.src.name, self.rel,
                       "the object changed while it was read")
        if not self.opened:
            self.version = self.version or resp.version
            self.size, self.mtime, self.opened = resp.size, resp.mtime, True
        self.resp = resp
