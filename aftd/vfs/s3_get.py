"""The ranged ``GetObject`` of an S3 object as a request a thread sends (:mod:`aftd.vfs.objget`:
large downloads to local disk): a presigned URL (SigV4, signed by the client's own
credentials on the event loop, with the ``Range`` and ``If-Match`` headers among those signed)
and how its answer is read, with the same statuses as the streaming reads'
(:mod:`aftd.vfs.s3_download`)."""

from __future__ import annotations

import re
import ssl
from email.message import Message
from email.utils import parsedate_to_datetime
from typing import Any

from botocore.httpsession import get_cert_path

from aftd.errors import TransferError
from aftd.vfs.base import PathNotFoundError, TransientError, fail
from aftd.vfs.objget import Answer, HttpGet, range_honoured
from aftd.vfs.objkeys import mtime_from_meta
from aftd.vfs.objread import ObjectChanged

__all__ = ["blocking_get", "tls_context"]

_META = "x-amz-meta-"
_URL_LIFETIME_S = 3600  # a presigned GET is sent at once; an hour covers a slow start
_CODE = re.compile(rb"<Code>([^<]{1,100})</Code>")


def tls_context(ca_file: str) -> ssl.SSLContext:
    """The CAs botocore trusts (``ca_file``, else its default bundle)."""
    return ssl.create_default_context(cafile=ca_file or get_cert_path(True))


async def blocking_get(client: Any, vfs: str, bucket: str, rel: str, key: str, start: int,
                       end: int | None, version: str | None, *, context: ssl.SSLContext | None,
                       connect_timeout_s: float, read_timeout_s: float) -> HttpGet:
    span = f"bytes={start}-{'' if end is None else end - 1}"
    params: dict[str, str] = {"Bucket": bucket, "Key": key, "Range": span}
    headers = {"Range": span}
    if version:
        params["IfMatch"] = headers["If-Match"] = version
    url = await client.generate_presigned_url("get_object", Params=params,
                                              ExpiresIn=_URL_LIFETIME_S)

    def answer(status: int, msg: Message, body: bytes) -> Answer:
        if status not in (200, 206):
            raise _error(vfs, bucket, rel, status, body)
        if not range_honoured(status, msg.get("Content-Range"), start):
            raise fail(TransferError, vfs, rel,
                       f"the server ignored the range request (HTTP {status})")
        meta = {k[len(_META):]: v for k, v in msg.items() if k.lower().startswith(_META)}
        modified = msg.get("Last-Modified")
        stamp = parsedate_to_datetime(modified).timestamp() if modified else 0.0
        return Answer(_size(msg, start), msg.get("ETag"), mtime_from_meta(meta, stamp))

    return HttpGet(url, headers, answer, context=context if url.startswith("https:") else None,
                   connect_timeout_s=connect_timeout_s, read_timeout_s=read_timeout_s)


def _error(vfs: str, bucket: str, rel: str, status: int, body: bytes) -> TransferError:
    found = _CODE.search(body)
    code = found.group(1).decode("ascii", "replace") if found else f"HTTP {status}"
    if status == 412:
        return fail(ObjectChanged, vfs, rel, "the object changed while it was read")
    if status == 404:
        if code == "NoSuchBucket":
            return fail(TransferError, vfs, rel, f"bucket {bucket!r} does not exist")
        return fail(PathNotFoundError, vfs, rel, "no such file or directory")
    if status in (401, 403):
        return fail(TransferError, vfs, rel, f"access denied ({code}): check the credentials "
                    "and the bucket's permissions")
    if status == 416:
        return fail(TransferError, vfs, rel, "the object is shorter than expected (it changed)")
    cls = TransientError if status in (408, 429) or status >= 500 else TransferError
    return fail(cls, vfs, rel, f"{code} (HTTP {status})")


def _size(msg: Message, start: int) -> int:
    """The object's size from Content-Range ("bytes a-b/N"), else start + Content-Length."""
    whole = str(msg.get("Content-Range", "")).rpartition("/")[2]
    if whole.isdigit():
        return int(whole)
    return start + int(msg.get("Content-Length", "0"))
