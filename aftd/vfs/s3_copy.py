"""Server-side copies on S3: CopyObject, or UploadPartCopy in parts above ``copy_cutoff_mib``.

One CopyObject copies at most 5 GiB; larger objects are copied as a multipart upload whose
parts the server copies from byte ranges of the source (``x-amz-copy-source-range``), up to
``max_parts_in_flight`` at once, aborted on failure like an upload. Either way no byte passes
through aftd. ``mtime`` replaces the stored modification time (with the other user metadata
and the content type kept); ``None`` keeps the source's metadata as it is.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aftd.errors import TransferError
from aftd.vfs.base import fail
from aftd.vfs.objkeys import MTIME_KEY, mtime_meta
from aftd.vfs.s3_config import MAX_PARTS
from aftd.vfs.s3_ops import S3Ops

__all__ = ["PartCopyUnsupported", "server_copy"]

MIB = 1 << 20


class PartCopyUnsupported(TransferError):
    """The server answered UploadPartCopy without an ETag (rclone serve s3 does): it cannot
    copy in parts, so the caller streams the object instead."""


async def server_copy(dst: S3Ops, rel: str, src_bucket: str, src_key: str, dst_key: str, *,
                      mtime: float | None) -> int:
    """Copy ``src_bucket/src_key`` to ``dst_key`` of ``dst``'s bucket; returns the size."""
    head = await dst.call(rel, "head_object", Bucket=src_bucket, Key=src_key)
    size = int(head["ContentLength"])
    args = dst.put_args()
    if mtime is not None or (src_key == dst_key and src_bucket == dst.bucket):
        meta = dict(head.get("Metadata") or {})
        if mtime is not None:
            meta = {k: v for k, v in meta.items() if k.lower() != MTIME_KEY}
            meta[MTIME_KEY] = mtime_meta(mtime)
        args.update(Metadata=meta, MetadataDirective="REPLACE")
        if head.get("ContentType"):
            args["ContentType"] = head["ContentType"]
    source = {"Bucket": src_bucket, "Key": src_key}
    if size <= dst.cfg.copy_cutoff_mib * MIB:
        await dst.call(rel, "copy_object", Bucket=dst.bucket, Key=dst_key, CopySource=source,
                       **args)
    else:
        args.pop("MetadataDirective", None)
        if "Metadata" not in args and head.get("Metadata"):
            args["Metadata"] = head["Metadata"]  # a multipart copy starts without metadata
        await _copy_in_parts(dst, rel, source, dst_key, size, args)
    return size


async def _copy_in_parts(dst: S3Ops, rel: str, source: dict[str, str], key: str, size: int,
                         args: dict[str, Any]) -> None:
    part = max(dst.cfg.copy_cutoff_mib * MIB, -(-size // MAX_PARTS))
    ranges = [(n + 1, start, min(start + part, size) - 1)
              for n, start in enumerate(range(0, size, part))]
    r = await dst.call(rel, "create_multipart_upload", Bucket=dst.bucket, Key=key, **args)
    upload_id = str(r["UploadId"])
    gate = asyncio.Semaphore(dst.cfg.max_parts_in_flight)

    async def copy_part(number: int, first: int, last: int) -> dict[str, Any]:
        async with gate:
            res = await dst.call(rel, "upload_part_copy", Bucket=dst.bucket, Key=key,
                                 UploadId=upload_id, PartNumber=number, CopySource=source,
                                 CopySourceRange=f"bytes={first}-{last}")
        etag = (res.get("CopyPartResult") or {}).get("ETag")
        if not etag:
            raise fail(PartCopyUnsupported, dst.name, rel,
                       f"{dst.cfg.endpoint or 'the server'} cannot copy objects in parts "
                       f"(UploadPartCopy): objects above vfs.{dst.name}.copy_cutoff_mib are "
                       "streamed")
        return {"PartNumber": number, "ETag": etag}

    tasks = [asyncio.create_task(copy_part(*r)) for r in ranges]
    try:
        parts = await asyncio.gather(*tasks)
        await dst.call(rel, "complete_multipart_upload", Bucket=dst.bucket, Key=key,
                       UploadId=upload_id, MultipartUpload={"Parts": list(parts)})
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.shield(dst.abort_upload(key, upload_id, quiet=True))
        raise
