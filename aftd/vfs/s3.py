"""``s3``: a bucket (and a prefix in it) on AWS S3 or an S3-compatible server, via aiobotocore.

The filesystem view (paths as keys under the prefix, rclone-like directories, rename, mtime in
metadata) is :class:`~aftd.vfs.objstore.ObjectStoreVfs`; this module adds the S3 primitives and
the streams: ranged GETs (:mod:`aftd.vfs.s3_download`, read by :mod:`aftd.vfs.objread`),
streaming multipart uploads that publish on completion and abort on failure
(:mod:`aftd.vfs.s3_upload`), server-side copies (:mod:`aftd.vfs.s3_copy`), and verification
from the checksums the server verified.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog

from aftd.errors import SecretError, TransferError
from aftd.secrets.base import SecretResolver
from aftd.vfs.base import (
    VERIFIED_SERVER_SHA256,
    StreamDigests,
    Vfs,
    WriteStream,
    fail,
    mismatch,
)
from aftd.vfs.config import VfsConfig
from aftd.vfs.objget import HttpGet
from aftd.vfs.objkeys import mtime_from_meta
from aftd.vfs.objread import RangeResponse
from aftd.vfs.objstore import ObjectEntry, ObjectStoreVfs
from aftd.vfs.s3_client import AUTH_CODES, ERRORS, S3Client, S3Code, error_code, translate
from aftd.vfs.s3_config import S3VfsConfig
from aftd.vfs.s3_copy import PartCopyUnsupported, server_copy
from aftd.vfs.s3_download import BODY_ERRORS, get_range
from aftd.vfs.s3_get import blocking_get, tls_context
from aftd.vfs.s3_ops import Orphans
from aftd.vfs.s3_upload import S3Receipt, S3Upload

__all__ = ["S3Vfs", "create"]

log = structlog.get_logger(__name__)
_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})
_GONE = frozenset({"NoSuchUpload"})
_BUCKET_CHECK = _NOT_FOUND | {"NoSuchBucket", "403", "AccessDenied"}
_PAGE = 1000


class S3Vfs(ObjectStoreVfs):
    kind = "s3"
    read_errors = BODY_ERRORS
    blocking_gets = True

    def __init__(self, cfg: S3VfsConfig, secrets: SecretResolver) -> None:
        super().__init__(cfg.name, cfg.prefix, streams=cfg.streams,
                         streams_min_size=cfg.streams_min_size)
        self.cfg = cfg
        self.bucket = cfg.bucket
        self.client = S3Client(cfg, secrets)
        self.orphans = Orphans()
        self._tls: ssl.SSLContext | None = None  # for blocking GETs, made at the first

    async def call(self, rel: str, op: str, *, allow: frozenset[str] = frozenset(),
                   **kw: Any) -> Any:
        """One S3 request; errors become :class:`TransferError` naming the VFS and ``rel``,
        except codes in ``allow``, raised as :class:`S3Code` for the caller to handle."""
        client = await self._client()
        try:
            return await getattr(client, op)(**kw)
        except ERRORS as exc:
            code = error_code(exc)
            if code in allow:
                raise S3Code(code) from None
            if code in AUTH_CODES:
                await self.client.drop()  # the next request resolves the secrets again
            raise translate(self.client, self.name, rel, exc) from None

    async def _client(self) -> Any:
        try:
            return await self.client.get()
        except SecretError as exc:
            raise SecretError(f"vfs {self.name!r}: {exc} (vfs.{self.name}.access_key_secret, "
                              f"vfs.{self.name}.secret_key_secret)") from None

    def put_args(self) -> dict[str, Any]:
        """Storage class and encryption for a new object (empty: the bucket's defaults)."""
        args: dict[str, Any] = {}
        if self.cfg.storage_class:
            args["StorageClass"] = self.cfg.storage_class
        if self.cfg.sse:
            args["ServerSideEncryption"] = self.cfg.sse
        if self.cfg.sse_kms_key_id:
            args["SSEKMSKeyId"] = self.cfg.sse_kms_key_id
        return args

    def _rel_of(self, key: str) -> str:
        return key[len(self.keys.prefix):].rstrip("/")

    async def aclose(self) -> None:
        await self.orphans.retry(self.abort_upload)
        await self.client.aclose()

    # -- object-store primitives -----------------------------------------------------------
    async def head_object(self, key: str) -> ObjectEntry | None:
        try:
            r = await self.call(self._rel_of(key), "head_object", allow=_NOT_FOUND,
                                Bucket=self.bucket, Key=key)
        except S3Code:
            return None
        mtime = mtime_from_meta(r.get("Metadata"), r["LastModified"].timestamp())
        return ObjectEntry(key, int(r["ContentLength"]), mtime)

    async def list_objects(self, prefix: str, *, limit: int | None = None,
                           ) -> AsyncIterator[ObjectEntry | str]:
        rel, token, n = self._rel_of(prefix), None, 0
        while True:
            kw: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "Delimiter": "/",
                                  "MaxKeys": min(_PAGE, limit or _PAGE)}
            if token:
                kw["ContinuationToken"] = token
            page = await self.call(rel, "list_objects_v2", **kw)
            items: list[ObjectEntry | str] = [
                ObjectEntry(c["Key"], int(c["Size"]), c["LastModified"].timestamp())
                for c in page.get("Contents", [])]
            items += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
            for item in items:
                yield item
                n += 1
                if limit is not None and n >= limit:
                    return
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    async def delete_object(self, key: str) -> None:
        try:
            await self.call(self._rel_of(key), "delete_object", allow=_NOT_FOUND,
                            Bucket=self.bucket, Key=key)
        except S3Code:
            return

    async def copy_object(self, src_key: str, dst_key: str, *, mtime: float | None) -> int:
        return await server_copy(self, self._rel_of(dst_key), self.bucket, src_key, dst_key,
                                 mtime=mtime)

    async def abort_upload(self, key: str, upload_id: str, *, quiet: bool = False) -> None:
        """Abort a multipart upload (an unknown one is already gone); ``quiet``: remember it
        for later instead of raising when the server cannot be reached."""
        try:
            await self.call(self._rel_of(key), "abort_multipart_upload", allow=_GONE,
                            Bucket=self.bucket, Key=key, UploadId=upload_id)
        except S3Code:
            return
        except TransferError as exc:
            if not quiet:
                raise
            self.orphans.pending.add((key, upload_id))
            log.warning("s3_abort_failed", vfs=self.name, key=key, error=str(exc),
                        retry="before the next upload")

    async def get_range(self, rel: str, key: str, start: int, end: int | None,
                        version: str | None) -> RangeResponse:
        return await get_range(self, rel, key, start, end, version)

    def service_url(self) -> str:
        return self.cfg.endpoint or f"https://s3.{self.cfg.region}.amazonaws.com"

    async def blocking_get(self, rel: str, key: str, start: int, end: int | None,
                           version: str | None) -> HttpGet:
        if self._tls is None:
            self._tls = tls_context(self.cfg.ca_file)
        return await blocking_get(
            await self._client(), self.name, self.bucket, rel, key, start, end, version,
            context=self._tls, connect_timeout_s=self.cfg.connect_timeout_s,
            read_timeout_s=self.cfg.read_timeout_s)

    # -- streams ---------------------------------------------------------------------------
    @asynccontextmanager
    async def open_write(self, path: str, offset: int = 0, *, mtime: float | None = None,
                         size: int | None = None, verify: bool = False,
                         ) -> AsyncIterator[WriteStream]:
        rel = self.rel(path)
        if offset:
            raise TransferError(f"vfs {self.name!r}: {rel!r}: an object cannot be appended "
                                "to (write from offset 0)", vfs=self.name, path=rel)
        await self._check_bucket(rel)
        upload = S3Upload(self, rel, self.keys.key(rel), mtime=mtime, size=size, verify=verify)
        try:
            yield upload
            if not upload.finished:  # a script that only wrote: leaving publishes, as a
                await upload.finish(mtime)  # local or SFTP file is complete once closed
        except BaseException:
            await upload.abort()
            raise

    async def _check_bucket(self, rel: str) -> None:
        """Some servers (SeaweedFS) create a missing bucket on the first PutObject: check once
        per connection that it exists, so a wrong ``bucket`` is an error, not a new bucket."""
        if self.client.bucket_checked:
            return
        try:
            await self.call(rel, "head_bucket", allow=_BUCKET_CHECK, Bucket=self.bucket)
        except S3Code as exc:
            if exc.code in _NOT_FOUND or exc.code == "NoSuchBucket":
                raise fail(TransferError, self.name, rel, (
                    f"bucket {self.bucket!r} does not exist on {self.client.where} "
                    f"(vfs.{self.name}.bucket)")) from None
            # else no permission to ask (s3:ListBucket): the upload itself will tell
        self.client.bucket_checked = True

    async def verify_stored(self, path: str, expected: StreamDigests,
                            receipt: object | None) -> str:
        """The server's checksum where it verified and echoed what was sent, else read back."""
        rel = self.rel(path)
        if isinstance(receipt, S3Receipt) and receipt.echoed is not None:
            if receipt.echoed != receipt.sent:
                raise mismatch(self.name, rel, receipt.sent, receipt.echoed)
            if receipt.whole is not None and receipt.whole != expected.sha256:
                raise mismatch(self.name, rel, expected.sha256, receipt.whole)
            return VERIFIED_SERVER_SHA256
        return await super().verify_stored(path, expected, receipt)

    async def copy_from(self, src: Vfs, src_path: str, dst_path: str, *,
                        mtime: float | None) -> int | None:
        """CopyObject (UploadPartCopy above ``copy_cutoff_mib``) from a bucket of the same
        account on the same server; None for any other source, or when the server cannot
        copy in parts (the copy engine streams the object then)."""
        if not isinstance(src, S3Vfs) or not await self._same_account(src):
            return None
        srel, drel = src.rel(src_path), self.rel(dst_path)
        try:
            return await server_copy(self, drel, src.bucket, src.keys.key(srel),
                                     self.keys.key(drel), mtime=mtime)
        except PartCopyUnsupported as exc:
            log.warning("s3_part_copy_unsupported", vfs=self.name, path=drel, error=str(exc))
            return None

    async def _same_account(self, other: S3Vfs) -> bool:
        if other.cfg.endpoint != self.cfg.endpoint:
            return False
        await self._client()
        await other._client()
        return bool(self.client.access_key_id) and \
            self.client.access_key_id == other.client.access_key_id


def create(cfg: VfsConfig, secrets: SecretResolver) -> S3Vfs:
    assert isinstance(cfg, S3VfsConfig), cfg
    return S3Vfs(cfg, secrets)
