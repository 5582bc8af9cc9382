"""The ``alt=media`` GET of a range of a GCS object as a request a thread sends
(:mod:`aftd.vfs.objget`: large downloads to local disk), and how its answer is read: the same
request and statuses as the streaming reads' (:meth:`aftd.vfs.gcs.GcsVfs.get_range`)."""

from __future__ import annotations

from email.message import Message
from typing import Protocol
from urllib.parse import urlencode

from aftd.errors import TransferError
from aftd.vfs.base import fail
from aftd.vfs.gcs_api import GcsApi, reason
from aftd.vfs.objget import Answer, HttpGet, range_honoured
from aftd.vfs.objread import ObjectChanged
from aftd.vfs.objtime import metadata_mtime

__all__ = ["META", "blocking_get", "media_size"]

META = "x-goog-meta-"


async def blocking_get(api: GcsApi, rel: str, key: str, start: int, end: int | None,
                       generation: str | None) -> HttpGet:
    params = {"alt": "media", **({"ifGenerationMatch": generation} if generation else {})}
    span = f"bytes={start}-{'' if end is None else end - 1}"
    headers = await api.headers({"Range": span})

    def answer(status: int, msg: Message, body: bytes) -> Answer:
        if status == 412:
            raise fail(ObjectChanged, api.opts.vfs, rel, "the object changed while it was read")
        if status not in (200, 206):
            raise api.error(status, rel, reason(body))
        if not range_honoured(status, msg.get("Content-Range"), start):
            raise fail(TransferError, api.opts.vfs, rel,
                       f"the server ignored the range request (HTTP {status})")
        meta = {k[len(META):]: v for k, v in msg.items() if k.lower().startswith(META)}
        return Answer(media_size(msg, start), msg.get("X-Goog-Generation"),
                      metadata_mtime(meta))

    return HttpGet(f"{api.object_url(key, media=True)}?{urlencode(params)}", headers, answer,
                   connect_timeout_s=api.opts.connect_timeout_s,
                   read_timeout_s=api.opts.read_timeout_s)


class _Headers(Protocol):
    def get(self, name: str, default: str, /) -> str: ...


def media_size(headers: _Headers, start: int) -> int:
    """The object's size from Content-Range ("bytes a-b/N"), else from the stored length."""
    whole = headers.get("Content-Range", "").rpartition("/")[2]
    if whole.isdigit():
        return int(whole)
    stored = headers.get("X-Goog-Stored-Content-Length", "")
    if stored.isdigit():
        return int(stored)
    return start + int(headers.get("Content-Length", "0"))
