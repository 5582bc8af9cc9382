"""``gcs``: a bucket (and a prefix in it) of Google Cloud Storage, through the JSON API.

Credentials are a service-account key read from the secret chain when the VFS first connects
(and again after the server refused them), exchanged for OAuth tokens (:mod:`aftd.vfs.gcs_auth`).
An emulator endpoint gets no token. The first connection also checks that the bucket exists,
so an unknown bucket is an error naming it rather than "file not found".

Listings carry each object's metadata, so they report the stored modification time. Uploads
publish when complete (:mod:`aftd.vfs.gcs_upload`); reads are ranged and resume after a
dropped connection from the last byte received, pinned to the object generation they started
on (:mod:`aftd.vfs.objread`). ``verify="sha256"`` compares the MD5 the server computed over
what it stored (``md5Hash``) with the MD5 the copy engine computed while streaming
(``verified_by = "server-md5"``).
Server-side copies (``rewrite``, repeated until done) work between buckets of one endpoint.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import replace
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp

from aftd.errors import SecretError, TransferError
from aftd.secrets.base import SecretResolver
from aftd.vfs.base import (
    PathNotFoundError,
    StreamDigests,
    Vfs,
    WriteStream,
    fail,
)
from aftd.vfs.config import VfsConfig
from aftd.vfs.gcs_api import CONNECT_ERRORS, GcsApi, GcsOptions
from aftd.vfs.gcs_auth import TokenSource, parse_service_account
from aftd.vfs.gcs_get import META, blocking_get, media_size
from aftd.vfs.gcs_upload import GcsWriter, mtime_metadata
from aftd.vfs.objget import HttpGet
from aftd.vfs.objread import EmptyResponse, ObjectChanged, RangeResponse
from aftd.vfs.objstore import OBJECT_STORE_FEATURES, ObjectEntry, ObjectStoreVfs, publish_on_exit
from aftd.vfs.objtime import metadata_mtime, parse_mtime, stored_mtime

__all__ = ["VERIFIED_SERVER_MD5", "GcsVfs", "create"]

T = TypeVar("T")
VERIFIED_SERVER_MD5 = "server-md5"
_READ_CHUNK = 1 << 20
_LIST_FIELDS = "items(name,size,updated,metadata),prefixes,nextPageToken"


class GcsVfs(ObjectStoreVfs):
    features = replace(OBJECT_STORE_FEATURES, list_mtime=True, stream_digests=("md5",))
    kind = "gcs"
    read_errors = CONNECT_ERRORS
    blocking_gets = True

    def __init__(self, name: str, opts: dict[str, Any], secrets: SecretResolver) -> None:
        super().__init__(name, opts["prefix"], streams=opts["streams"],
                         streams_min_size=opts["streams_min_size"])
        self.opts = GcsOptions(vfs=name, bucket=opts["bucket"], endpoint=opts["endpoint"],
                               connect_timeout_s=opts["connect_timeout_s"],
                               read_timeout_s=opts["read_timeout_s"], retries=opts["retries"])
        self.chunk = int(opts["chunk_size_mib"]) << 20
        self.credentials_secret: str = opts["credentials_secret"]
        self._secrets = secrets
        self._api: GcsApi | None = None
        self._lock: asyncio.Lock | None = None

    # -- connection ----------------------------------------------------------------------------
    async def api(self) -> GcsApi:
        """The client, built (secret resolved, bucket checked) on first use or after the
        server refused the credentials."""
        if self._api is not None and not self._api.refused:
            return self._api
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._api is None or self._api.refused:
                old, self._api = self._api, None
                if old is not None:
                    await old.aclose()
                api = GcsApi(self.opts, await self._tokens())
                try:
                    await self._check_bucket(api)
                except BaseException:
                    await api.aclose()
                    raise
                self._api = api
        return self._api

    async def _tokens(self) -> TokenSource | None:
        if not self.credentials_secret:
            return None
        try:
            text = await self._secrets.get(self.credentials_secret)
        except SecretError as exc:
            raise TransferError(f"vfs {self.name!r}: credentials_secret: {exc}",
                                vfs=self.name) from None
        account = parse_service_account(text, vfs=self.name, secret=self.credentials_secret)
        return TokenSource(account, vfs=self.name, timeout_s=self.opts.connect_timeout_s + 15)

    async def _check_bucket(self, api: GcsApi) -> None:
        try:
            await api.call("GET", api.objects_url, "",
                           params={"maxResults": "1", "prefix": self.keys.prefix,
                                   "fields": "nextPageToken"})
        except PathNotFoundError:
            raise fail(TransferError, self.name, "",
                       f"bucket {self.opts.bucket!r} does not exist") from None

    async def aclose(self) -> None:
        if self._api is not None:
            await self._api.aclose()
            self._api = None

    # -- primitives ----------------------------------------------------------------------------
    async def head_object(self, key: str) -> ObjectEntry | None:
        meta = await self._meta(key)
        return _entry(meta) if meta is not None else None

    async def _meta(self, key: str) -> dict[str, Any] | None:
        api = await self.api()
        try:
            meta = await api.call("GET", api.object_url(key), self._rel_of(key))
        except PathNotFoundError:
            return None
        return dict(meta)

    async def list_objects(self, prefix: str, *, limit: int | None = None,
                           ) -> AsyncIterator[ObjectEntry | str]:
        api = await self.api()
        params = {"prefix": prefix, "delimiter": "/", "fields": _LIST_FIELDS}
        if limit is not None:
            params["maxResults"] = str(limit)
        count = 0
        while True:
            page = await api.call("GET", api.objects_url, self._rel_of(prefix), params=params)
            items: list[ObjectEntry | str] = [*page.get("prefixes", []),
                                              *(_entry(m) for m in page.get("items", []))]
            for item in items:
                yield item
                count += 1
                if limit is not None and count >= limit:
                    return
            token = page.get("nextPageToken")
            if not token:
                return
            params["pageToken"] = token

    async def delete_object(self, key: str) -> None:
        api = await self.api()
        with suppress(PathNotFoundError):
            await api.call("DELETE", api.object_url(key), self._rel_of(key))

    async def copy_object(self, src_key: str, dst_key: str, *, mtime: float | None) -> int:
        return await self._rewrite(self.opts.bucket, src_key, dst_key, mtime)

    async def _rewrite(self, src_bucket: str, src_key: str, dst_key: str,
                       mtime: float | None) -> int:
        """``rewriteTo``, repeated with its token until the server says it is done."""
        api = await self.api()
        url = (f"{api.opts.base}/storage/v1/b/{quote(src_bucket, safe='')}/o/"
               f"{quote(src_key, safe='')}/rewriteTo/b/{quote(self.opts.bucket, safe='')}/o/"
               f"{quote(dst_key, safe='')}")
        body = {"metadata": mtime_metadata(mtime)} if mtime is not None else {}
        params: dict[str, str] = {}
        while True:
            res = await api.call("POST", url, self._rel_of(dst_key), params=params,
                                 json_body=body)
            if res.get("done"):
                return int(res.get("resource", {}).get("size", res.get("objectSize", 0)))
            params["rewriteToken"] = str(res.get("rewriteToken", ""))

    # -- what object stores do better than the base class -------------------------------------
    async def set_mtime(self, path: str, mtime: float) -> None:
        """Metadata can change in place on GCS (a PATCH), no copy needed."""
        rel = self.rel(path)
        api = await self.api()
        await api.call("PATCH", api.object_url(self.keys.key(rel)), rel,
                       json_body={"metadata": mtime_metadata(mtime)})

    async def copy_from(self, src: Vfs, src_path: str, dst_path: str, *,
                        mtime: float | None) -> int | None:
        if not isinstance(src, GcsVfs) or not self._same_account(src):
            return None
        srel, drel = src.rel(src_path), self.rel(dst_path)
        await src.api()  # the source bucket exists
        return await self._rewrite(src.opts.bucket, src.keys.key(srel), self.keys.key(drel),
                                   mtime)

    def _same_account(self, other: GcsVfs) -> bool:
        return (other.opts.base == self.opts.base
                and other.credentials_secret == self.credentials_secret)

    async def verify_stored(self, path: str, expected: StreamDigests,
                            receipt: object | None) -> str:
        """The server's MD5 of what it stored against the MD5 of what was streamed."""
        rel = self.rel(path)
        meta = receipt if isinstance(receipt, dict) else await self._meta(self.keys.key(rel))
        want = expected.extra.get("md5")
        if meta is None:
            raise fail(PathNotFoundError, self.name, rel, "vanished before it was verified")
        if not meta.get("md5Hash") or want is None:  # composite objects have no MD5
            return await super().verify_stored(path, expected, receipt)
        got = base64.b64decode(meta["md5Hash"]).hex()
        if got != want or int(meta.get("size", -1)) != expected.size:
            raise fail(TransferError, self.name, rel,
                       f"md5 mismatch: sent {want} ({expected.size} bytes), the server stored "
                       f"{got} ({meta.get('size')} bytes)")
        return VERIFIED_SERVER_MD5

    async def get_range(self, rel: str, key: str, start: int, end: int | None,
                        version: str | None) -> RangeResponse:
        """One ``alt=media`` GET, ``ifGenerationMatch`` the generation read so far. (Several
        at once multiply fake-gcs-server's work: it reads the whole object for every ranged
        request.)"""
        api = await self.api()
        resp = await api.open_media(key, rel, start, end, version)
        if resp.status == 412:
            resp.close()  # an aiohttp response's close() is not a coroutine
            raise fail(ObjectChanged, self.name, rel, "the object changed while it was read")
        if resp.status == 416:  # the offset is the end of the object
            resp.close()
            return EmptyResponse(start, version, None)
        if start and resp.status != 206:
            resp.close()
            raise fail(TransferError, self.name, rel,
                       f"the server ignored the range request (HTTP {resp.status})")
        return _Media(resp, start)

    async def blocking_get(self, rel: str, key: str, start: int, end: int | None,
                           version: str | None) -> HttpGet:
        return await blocking_get(await self.api(), rel, key, start, end, version)

    # -- streams -------------------------------------------------------------------------------
    @asynccontextmanager
    async def open_write(self, path: str, offset: int = 0, *, mtime: float | None = None,
                         size: int | None = None, verify: bool = False,
                         ) -> AsyncIterator[WriteStream]:
        # ``size`` and ``verify`` are hints a caller may pass; these uploads need neither (their
        # chunks are fixed by the config, and the server computes the MD5 verification uses).
        rel = self.new_object(path, offset)
        meta = mtime_metadata(mtime) if mtime is not None else {}
        writer = GcsWriter(await self.api(), self.keys.key(rel), rel, self.chunk, meta)
        async with publish_on_exit(writer):
            yield writer

    def _rel_of(self, key: str) -> str:
        return key[len(self.keys.prefix):] if key.startswith(self.keys.prefix) else key


class _Media:
    """An ``alt=media`` response: the object's size, generation and mtime, and its body."""

    def __init__(self, resp: aiohttp.ClientResponse, start: int) -> None:
        self.resp = resp
        self.version: str | None = resp.headers.get("X-Goog-Generation")
        meta = {k[len(META):]: v for k, v in resp.headers.items()
                if k.lower().startswith(META)}
        self.mtime: float | None = metadata_mtime(meta)
        self.size = media_size(resp.headers, start)

    async def read(self, n: int) -> bytes:
        parts: list[bytes] = []
        size = 0
        while size < n:
            piece = await self.resp.content.readany()
            if not piece:
                break
            parts.append(piece)
            size += len(piece)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def close(self) -> None:
        self.resp.close()


def _entry(meta: dict[str, Any]) -> ObjectEntry:
    updated = parse_mtime(meta.get("updated")) or 0.0
    return ObjectEntry(str(meta["name"]), int(meta.get("size", 0)),
                       stored_mtime(meta.get("metadata"), updated))


def create(cfg: VfsConfig, secrets: SecretResolver) -> GcsVfs:
    return GcsVfs(cfg.name, cfg.options, secrets)
