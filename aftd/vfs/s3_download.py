"""Reading an S3 object: the ranged GET the shared reader (:mod:`aftd.vfs.objread`) is built on.

``GetObject`` with ``Range: bytes=START-END`` and, once the read knows the object's ETag,
``If-Match`` it: a replaced object answers 412 and fails the read instead of splicing two
versions. A GET that starts at the object's end (S3 says ``InvalidRange``) learns size, ETag
and mtime from a HEAD instead.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import botocore.exceptions as bexc

from aftd.errors import TransferError
from aftd.vfs.base import fail
from aftd.vfs.objkeys import mtime_from_meta
from aftd.vfs.objread import EmptyResponse, ObjectChanged, RangeResponse
from aftd.vfs.s3_client import S3Code
from aftd.vfs.s3_ops import S3Ops

__all__ = ["BODY_ERRORS", "get_range"]

_EXPECTED = frozenset({"InvalidRange", "PreconditionFailed", "412", "416"})
# What reading a response body raises when the connection breaks: worth another GET.
BODY_ERRORS = (bexc.ResponseStreamingError, bexc.ReadTimeoutError, bexc.IncompleteReadError,
               bexc.HTTPClientError, aiohttp.ClientError, OSError, asyncio.TimeoutError)


class _Response:
    """A GetObject response: the object's size, ETag and mtime, and its streaming body."""

    def __init__(self, r: dict[str, Any], start: int) -> None:
        self.body = r["Body"]
        self.version: str | None = r.get("ETag")
        self.mtime: float | None = mtime_from_meta(r.get("Metadata"),
                                                   r["LastModified"].timestamp())
        self.size = _total_size(r, start)

    async def read(self, n: int) -> bytes:
        data: bytes = await self.body.read(n)
        return data

    async def close(self) -> None:
        self.body.close()


async def get_range(vfs: S3Ops, rel: str, key: str, start: int, end: int | None,
                    version: str | None) -> RangeResponse:
    args: dict[str, Any] = {"Bucket": vfs.bucket, "Key": key}
    if start or end is not None:
        args["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
    if version:
        args["IfMatch"] = version
    try:
        r = await vfs.call(rel, "get_object", allow=_EXPECTED, **args)
    except S3Code as exc:
        if exc.code in ("InvalidRange", "416"):  # starts at (or past) the end
            return await _empty_at(vfs, rel, key, start, version)
        raise fail(ObjectChanged, vfs.name, rel,
                   "the object changed while it was read") from None
    return _Response(r, start)


async def _empty_at(vfs: S3Ops, rel: str, key: str, start: int,
                    version: str | None) -> EmptyResponse:
    head = await vfs.call(rel, "head_object", Bucket=vfs.bucket, Key=key)
    size, etag = int(head["ContentLength"]), head.get("ETag")
    if version and etag != version:
        raise fail(ObjectChanged, vfs.name, rel, "the object changed while it was read")
    if start > size:
        raise fail(TransferError, vfs.name, rel,
                   f"offset {start} is past the end ({size} bytes)")
    return EmptyResponse(size, etag, mtime_from_meta(head.get("Metadata"),
                                                     head["LastModified"].timestamp()))


def _total_size(r: dict[str, Any], start: int) -> int:
    """The object's size from Content-Range ("bytes a-b/N"), else start + Content-Length."""
    content_range = str(r.get("ContentRange") or "")
    if "/" in content_range and content_range.rsplit("/", 1)[1].isdigit():
        return int(content_range.rsplit("/", 1)[1])
    return start + int(r["ContentLength"])
