"""``azure``: a container (and a prefix in it) of Azure Blob Storage, through azure-storage-blob's
aio client (aiohttp transport).

The credential — a shared key, a SAS token or a connection string — comes from the secret chain
when the VFS first connects (and again after the server refused it); the first connection also
checks that the container exists, so an unknown container is an error naming it.

Listings carry each blob's metadata, so they report the stored modification time. Uploads
publish when complete (:mod:`aftd.vfs.azure_upload`); reads are ranged (``read_chunk_mib`` per
request) and resume after a failure from the last byte received, pinned to the blob's ETag.
``verify="sha256"`` relies on the MD5s the upload carried (``checksum = true``): the server
checked each block's (or the single request's) MD5 before accepting it, and the committed blob
must show the MD5 of the whole stream as its ``Content-MD5`` and the size sent
(``verified_by`` = ``"server-block-md5"`` or ``"server-md5"``); without them, and after a
server-side copy, the blob is read back. Server-side copies use Copy Blob within one account and
are polled until done.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any, TypeVar
from urllib.parse import urlsplit

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError
from azure.storage.blob.aio import BlobClient, BlobPrefix, BlobServiceClient, ContainerClient

from aftd.errors import TransferError
from aftd.secrets.base import SecretResolver
from aftd.vfs.azure_conn import (
    AzureOptions,
    connect,
    error_code,
    is_auth_failure,
    translate,
)
from aftd.vfs.azure_get import BlobAccess
from aftd.vfs.azure_upload import AzureWriter
from aftd.vfs.base import (
    PathNotFoundError,
    StreamDigests,
    TransientError,
    Vfs,
    WriteStream,
    fail,
)
from aftd.vfs.config import VfsConfig
from aftd.vfs.objget import HttpGet
from aftd.vfs.objread import EmptyResponse, ObjectChanged, RangeResponse
from aftd.vfs.objstore import OBJECT_STORE_FEATURES, ObjectEntry, ObjectStoreVfs, publish_on_exit
from aftd.vfs.objtime import MTIME_KEY, format_rfc3339, metadata_mtime, stored_mtime
from aftd.vfs.segments import SegmentReader

__all__ = ["VERIFIED_SERVER_BLOCK_MD5", "VERIFIED_SERVER_MD5", "AzureVfs", "create"]

T = TypeVar("T")
VERIFIED_SERVER_BLOCK_MD5 = "server-block-md5"
VERIFIED_SERVER_MD5 = "server-md5"
_COPY_POLL_S = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)


class AzureVfs(ObjectStoreVfs):
    features = replace(OBJECT_STORE_FEATURES, list_mtime=True)
    kind = "azure"
    object_noun = "a blob"
    blocking_gets = True

    def __init__(self, name: str, opts: dict[str, Any], secrets: SecretResolver) -> None:
        super().__init__(name, opts["prefix"], streams=opts["streams"],
                         streams_min_size=opts["streams_min_size"])
        self.opts = AzureOptions.of(name, opts)
        self._secrets = secrets
        self._service: BlobServiceClient | None = None
        self._container: ContainerClient | None = None
        self._refused = False
        self._lock: asyncio.Lock | None = None
        self._access = BlobAccess(self.opts, secrets)  # for blocking GETs

    # -- connection ----------------------------------------------------------------------------
    async def container(self) -> ContainerClient:
        """The container client, built (secret resolved, container checked) on first use or
        after the server refused the credentials."""
        if self._container is not None and not self._refused:
            return self._container
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._container is None or self._refused:
                await self.aclose()
                service = await connect(self.opts, self._secrets)
                container = service.get_container_client(self.opts.container)
                try:
                    await self._check_container(container)
                except BaseException:
                    await service.close()
                    raise
                self._service, self._container, self._refused = service, container, False
        assert self._container is not None
        return self._container

    async def _check_container(self, container: ContainerClient) -> None:
        """One listing request: an unknown container (or refused credentials) shows here."""
        pages = container.list_blobs(name_starts_with=self.keys.prefix, results_per_page=1)
        try:
            async for _ in pages.by_page():
                break
        except AzureError as exc:
            raise translate(self.opts, "", exc) from None

    async def aclose(self) -> None:
        service, self._service, self._container = self._service, None, None
        if service is not None:
            await service.close()

    async def _run(self, rel: str, fn: Callable[[ContainerClient], Awaitable[T]]) -> T:
        """One SDK call (the SDK retries transient failures itself), errors translated."""
        container = await self.container()
        try:
            return await fn(container)
        except AzureError as exc:
            raise self._error(rel, exc) from None

    def _error(self, rel: str, exc: BaseException) -> TransferError:
        if is_auth_failure(exc):
            self._refused = True  # resolve the secret again next time: it may have rotated
            self._access.forget()
        return translate(self.opts, rel, exc)

    def _blob(self, container: ContainerClient, key: str) -> BlobClient:
        return container.get_blob_client(key)

    # -- primitives ----------------------------------------------------------------------------
    async def head_object(self, key: str) -> ObjectEntry | None:
        props = await self._props(key)
        if props is None:
            return None
        return ObjectEntry(key, int(props.size), _mtime(props))

    async def _props(self, key: str) -> Any:
        async def op(c: ContainerClient) -> Any:
            try:
                return await self._blob(c, key).get_blob_properties()
            except ResourceNotFoundError as exc:
                if error_code(exc) == "ContainerNotFound":
                    raise
                return None

        return await self._run(self._rel_of(key), op)

    async def list_objects(self, prefix: str, *, limit: int | None = None,
                           ) -> AsyncIterator[ObjectEntry | str]:
        container = await self.container()
        count = 0
        try:
            async for item in container.walk_blobs(name_starts_with=prefix, delimiter="/",
                                                   include=["metadata"],
                                                   results_per_page=limit):
                if isinstance(item, BlobPrefix):
                    yield str(item.name)  # a "directory"
                else:
                    yield ObjectEntry(str(item.name), int(item.size), _mtime(item))
                count += 1
                if limit is not None and count >= limit:
                    return
        except AzureError as exc:
            raise self._error(self._rel_of(prefix), exc) from None

    async def delete_object(self, key: str) -> None:
        async def op(c: ContainerClient) -> None:
            try:
                await self._blob(c, key).delete_blob()
            except ResourceNotFoundError as exc:
                if error_code(exc) == "ContainerNotFound":
                    raise

        await self._run(self._rel_of(key), op)

    async def copy_object(self, src_key: str, dst_key: str, *, mtime: float | None) -> int:
        container = await self.container()
        return await self._copy_blob(self._blob(container, src_key), dst_key, mtime)

    async def _copy_blob(self, source: BlobClient, dst_key: str, mtime: float | None) -> int:
        """Copy Blob from ``source`` (this account), polled until the server finishes it."""
        rel = self._rel_of(dst_key)
        meta = None
        if mtime is not None:
            try:
                props = await source.get_blob_properties()
            except AzureError as exc:
                raise self._error(rel, exc) from None
            meta = {**(props.metadata or {}), MTIME_KEY: format_rfc3339(mtime)}

        async def op(c: ContainerClient) -> int:
            dst = self._blob(c, dst_key)
            try:
                started = await dst.start_copy_from_url(source.url, metadata=meta)
            except HttpResponseError as exc:
                if error_code(exc) == "CannotVerifyCopySource":
                    raise _SourceRefused from None
                raise
            return await _wait_copy(dst, str(started.get("copy_status") or "pending"))

        return await self._run(rel, op)

    # -- what the backend does better than the base class -------------------------------------
    async def set_mtime(self, path: str, mtime: float) -> None:
        """Metadata changes in place (Set Blob Metadata), no copy needed."""
        rel = self.rel(path)

        async def op(c: ContainerClient) -> None:
            blob = self._blob(c, self.keys.key(rel))
            props = await blob.get_blob_properties()
            meta = {**(props.metadata or {}), MTIME_KEY: format_rfc3339(mtime)}
            await blob.set_blob_metadata(meta, etag=props.etag,
                                         match_condition=MatchConditions.IfNotModified)

        await self._run(rel, op)

    async def copy_from(self, src: Vfs, src_path: str, dst_path: str, *,
                        mtime: float | None) -> int | None:
        """Copy Blob when ``src`` is a container of the same storage account. The source URL
        carries the source's SAS when it has one; a source the server cannot read with what
        the request carries (``CannotVerifyCopySource``) is streamed instead."""
        if not isinstance(src, AzureVfs):
            return None
        srel, drel = src.rel(src_path), self.rel(dst_path)
        source = (await src.container()).get_blob_client(src.keys.key(srel))
        await self.container()  # connected: the account to compare is known
        if not self._same_account(src):
            return None
        try:
            return await self._copy_blob(source, self.keys.key(drel), mtime)
        except _SourceRefused:
            return None

    def _same_account(self, other: AzureVfs) -> bool:
        mine, theirs = self._service, other._service
        return (mine is not None and theirs is not None
                and mine.account_name == theirs.account_name
                and _endpoint(mine) == _endpoint(theirs))

    async def verify_stored(self, path: str, expected: StreamDigests,
                            receipt: object | None) -> str:
        """The MD5s the upload carried, against the committed blob (see the module docstring);
        a read-back when there were none."""
        if not isinstance(receipt, dict) or receipt.get("md5") is None:
            return await super().verify_stored(path, expected, receipt)
        rel = self.rel(path)
        props = await self._props(self.keys.key(rel))
        if props is None:
            raise fail(PathNotFoundError, self.name, rel, "vanished before it was verified")
        stored = props.content_settings.content_md5
        got = bytes(stored).hex() if stored else "none"
        server = receipt.get("server_md5")
        if got != receipt["md5"] or int(props.size) != expected.size or \
                (server is not None and server != got):
            raise fail(TransferError, self.name, rel,
                       f"md5 mismatch: sent {receipt['md5']} ({expected.size} bytes), the blob "
                       f"has {got} ({props.size} bytes)")
        return VERIFIED_SERVER_BLOCK_MD5 if receipt["how"] == "blocks" else VERIFIED_SERVER_MD5

    async def get_range(self, rel: str, key: str, start: int, end: int | None,
                        version: str | None) -> RangeResponse:
        """Ranged downloads pinned to the ETag. One range of a download in parts keeps its
        share of ``max_reads_in_flight``, so the parts together hold what one stream would."""
        depth = self.opts.max_reads_in_flight
        if end is not None:
            depth = max(1, -(-depth // self.streams))
        container = await self.container()
        blob = _BlobRange(self, self._blob(container, key), rel, version)
        return await blob.start(start, end, depth)

    def service_url(self) -> str:
        return self.opts.account_url

    async def blocking_streams(self, size: int) -> int:
        return await super().blocking_streams(size) if await self._access.usable() else 0

    async def blocking_get(self, rel: str, key: str, start: int, end: int | None,
                           version: str | None) -> HttpGet:
        blob = self._blob(await self.container(), key)
        return await self._access.get(blob.url, rel, self.opts.container, key, start, end,
                                      version)

    # -- streams -------------------------------------------------------------------------------
    @asynccontextmanager
    async def open_write(self, path: str, offset: int = 0, *, mtime: float | None = None,
                         size: int | None = None, verify: bool = False,
                         ) -> AsyncIterator[WriteStream]:
        # ``size`` and ``verify`` are hints a caller may pass; these uploads need neither (their
        # chunks are fixed by the config, and the MD5s that verification uses always travel).
        rel = self.new_object(path, offset)
        meta = {MTIME_KEY: format_rfc3339(mtime)} if mtime is not None else {}
        container = await self.container()
        writer = AzureWriter(self.opts, self._blob(container, self.keys.key(rel)), rel, meta,
                             self._error)
        async with publish_on_exit(writer):
            yield writer

    def _rel_of(self, key: str) -> str:
        return key[len(self.keys.prefix):] if key.startswith(self.keys.prefix) else key


class _SourceRefused(Exception):
    """Copy Blob could not read its source with the authorisation the request carried."""


class _BlobRange:
    """Bytes ``[start, end)`` of a blob as the SDK reads them: whole ranges of
    ``read_chunk_mib``, ``depth`` at a time (:class:`~aftd.vfs.segments.SegmentReader`), pinned
    to the ETag the first one saw. The SDK retries each range; one that still fails is asked
    again ``retries`` times before the read gives up (and the shared reader asks again for the
    rest)."""

    def __init__(self, vfs: AzureVfs, blob: BlobClient, rel: str, version: str | None) -> None:
        self.vfs, self.blob, self.rel = vfs, blob, rel
        self.version = version
        self.mtime: float | None = None
        self.size = 0
        self.head = b""
        self.rest: SegmentReader | None = None

    async def start(self, start: int, end: int | None, depth: int) -> RangeResponse:
        seg = self.vfs.opts.read_chunk
        first = seg if end is None else min(seg, end - start)
        try:
            downloader = await self._download(start, max(first, 1))
        except HttpResponseError as exc:
            if exc.status_code != 416:  # 416: the offset is the end of the blob
                raise self._error(exc) from None
            return EmptyResponse(start, self.version, None)
        props = downloader.properties
        self.version, self.mtime = props.etag, metadata_mtime(props.metadata)
        self.head = await self._readall(downloader)
        self.size = _total(props, start + len(self.head))
        stop = self.size if end is None else min(end, self.size)
        self.rest = SegmentReader(self._fetch, start + len(self.head), stop, seg, depth)
        return self

    async def read(self, n: int) -> bytes:
        if self.head:
            data, self.head = self.head, b""
            return data
        return await self.rest.read() if self.rest is not None else b""

    async def close(self) -> None:
        rest, self.rest = self.rest, None
        if rest is not None:  # cancels the ranges in flight
            await rest.close()

    async def _download(self, start: int, length: int) -> Any:
        cond: dict[str, Any] = {}
        if self.version:
            cond = {"etag": self.version, "match_condition": MatchConditions.IfNotModified}
        return await self.blob.download_blob(offset=start, length=length, max_concurrency=1,
                                             **cond)

    def _error(self, exc: AzureError) -> TransferError:
        if isinstance(exc, HttpResponseError) and exc.status_code == 412:
            return fail(ObjectChanged, self.vfs.name, self.rel,
                        "the object changed while it was read")
        return self.vfs._error(self.rel, exc)

    async def _readall(self, downloader: Any) -> bytes:
        try:
            return bytes(await downloader.readall())
        except AzureError as exc:
            raise self._error(exc) from None

    async def _fetch(self, start: int, end: int) -> bytes:
        for attempt in range(self.vfs.opts.retries + 1):
            try:
                data = await self._readall(await self._download(start, end - start))
                break
            except AzureError as exc:
                err = self._error(exc)
            except TransientError as exc:
                err = exc
            if not isinstance(err, TransientError) or attempt == self.vfs.opts.retries:
                raise err
            await asyncio.sleep(float(attempt + 1))
        if len(data) != end - start:
            raise fail(TransferError, self.vfs.name, self.rel,
                       f"the blob changed during the read (got {len(data)} of {end - start} "
                       f"bytes at {start})")
        return data


async def _wait_copy(blob: BlobClient, status: str) -> int:
    """Poll a started copy until it is no longer pending; the size copied."""
    for delay in (*_COPY_POLL_S, *([_COPY_POLL_S[-1]] * 10_000)):
        props = await blob.get_blob_properties()
        status = str(props.copy.status or status)
        if status != "pending":
            break
        await asyncio.sleep(delay)
    if status != "success":
        raise HttpResponseError(message=f"server-side copy ended {status}")
    return int(props.size)


def _total(props: Any, fallback: int) -> int:
    """The blob's size: a ranged download's properties give the range's length as ``size`` and
    the whole in ``content_range`` (``bytes 0-8388607/1073741824``)."""
    whole = str(props.content_range or "").rpartition("/")[2]
    return int(whole) if whole.isdigit() else fallback


def _endpoint(service: BlobServiceClient) -> str:
    """The service URL without a SAS query."""
    parts = urlsplit(service.url)
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def _mtime(props: Any) -> float:
    modified = props.last_modified.timestamp() if props.last_modified else 0.0
    return stored_mtime(props.metadata, modified)


def create(cfg: VfsConfig, secrets: SecretResolver) -> AzureVfs:
    return AzureVfs(cfg.name, cfg.options, secrets)

