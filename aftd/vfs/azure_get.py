"""A ranged ``Get Blob`` as a request a thread sends (:mod:`aftd.vfs.objget`: large downloads to
local disk), authorised by a SAS for that one blob, read-only and valid for an hour: the SAS
the config gives (``sas_secret``, or a connection string's ``SharedAccessSignature``), else one
signed here with the account key (``account_key_secret``, or the connection string's
``AccountKey``), as the SDK's ``generate_blob_sas`` does. The answer is read with the same
statuses as the SDK's reads (:mod:`aftd.vfs.azure`)."""

from __future__ import annotations

import datetime as dt
from email.message import Message
from urllib.parse import urlsplit, urlunsplit

from azure.storage.blob import BlobSasPermissions, generate_blob_sas

from aftd.errors import SecretError, TransferError
from aftd.secrets.base import SecretResolver
from aftd.vfs.azure_config import account_name_of
from aftd.vfs.azure_conn import AzureOptions, ContainerMissing
from aftd.vfs.base import PathNotFoundError, TransientError, fail
from aftd.vfs.objget import Answer, HttpGet, range_honoured
from aftd.vfs.objread import ObjectChanged
from aftd.vfs.objtime import metadata_mtime

__all__ = ["BlobAccess"]

_META = "x-ms-meta-"
_LIFETIME = dt.timedelta(hours=1)
_SKEW = dt.timedelta(minutes=15)  # a SAS valid from a little before now: clocks differ


class BlobAccess:
    """Read access to single blobs for requests sent from threads (see the module doc)."""

    def __init__(self, opts: AzureOptions, secrets: SecretResolver) -> None:
        self.opts, self.secrets = opts, secrets
        self._sas: str | None = None
        self._key: tuple[str, str] | None = None
        self._loaded = False

    def forget(self) -> None:
        """Resolve the secret again next time (the server refused it: it may have rotated)."""
        self._loaded = False
        self._sas = self._key = None

    async def usable(self) -> bool:
        """Whether the configured credential gives a SAS."""
        await self._load()
        return self._sas is not None or self._key is not None

    async def get(self, blob_url: str, rel: str, container: str, blob: str, start: int,
                  end: int | None, version: str | None) -> HttpGet:
        """The GET of bytes ``[start, end)`` of the blob at ``blob_url`` (the SDK's URL, any
        query dropped), on condition of ``version`` (an ETag) when given."""
        await self._load()
        parts = urlsplit(blob_url)
        url = urlunsplit(parts._replace(query=self._query(container, blob)))
        headers = {"x-ms-range": f"bytes={start}-{'' if end is None else end - 1}"}
        if version:
            headers["If-Match"] = version

        def answer(status: int, msg: Message, body: bytes) -> Answer:
            if status not in (200, 206):
                raise self._error(rel, status, str(msg.get("x-ms-error-code") or ""))
            if not range_honoured(status, msg.get("Content-Range"), start):
                raise fail(TransferError, self.opts.vfs, rel,
                           f"the server ignored the range request (HTTP {status})")
            meta = {k[len(_META):]: v for k, v in msg.items() if k.lower().startswith(_META)}
            whole = str(msg.get("Content-Range", "")).rpartition("/")[2]
            size = int(whole) if whole.isdigit() else start + int(msg.get("Content-Length", "0"))
            return Answer(size, msg.get("ETag"), metadata_mtime(meta))

        return HttpGet(url, headers, answer, connect_timeout_s=self.opts.connect_timeout_s,
                       read_timeout_s=self.opts.read_timeout_s)

    def _query(self, container: str, blob: str) -> str:
        if self._sas is not None:
            return self._sas
        assert self._key is not None
        now = dt.datetime.now(dt.UTC)
        return generate_blob_sas(self._key[0], container, blob, account_key=self._key[1],
                                 permission=BlobSasPermissions(read=True),
                                 start=now - _SKEW, expiry=now + _LIFETIME)

    async def _load(self) -> None:
        if self._loaded:
            return
        opts = self.opts
        try:
            value = (await self.secrets.get(opts.secret_name)).strip()
        except SecretError as exc:
            raise TransferError(f"vfs {opts.vfs!r}: {opts.secret_key}: {exc}",
                                vfs=opts.vfs) from None
        if opts.connection_string_secret:
            fields = dict(p.split("=", 1) for p in value.split(";") if "=" in p)
            sas, key, name = (fields.get("SharedAccessSignature"), fields.get("AccountKey"),
                              fields.get("AccountName"))
            self._sas = sas.lstrip("?") if sas else None
            self._key = (name, key) if key and name and not sas else None
        elif opts.account_key_secret:
            name = account_name_of(opts.account_url)
            self._key = (name, value) if name else None
        else:
            self._sas = value.lstrip("?")
        self._loaded = True

    def _error(self, rel: str, status: int, code: str) -> TransferError:
        vfs = self.opts.vfs
        if status == 412:
            return fail(ObjectChanged, vfs, rel, "the object changed while it was read")
        if code == "ContainerNotFound":
            return fail(ContainerMissing, vfs, rel,
                        f"container {self.opts.container!r} does not exist")
        if status == 404:
            return fail(PathNotFoundError, vfs, rel, "no such file or directory")
        if status in (401, 403):
            self.forget()
            return fail(TransferError, vfs, rel, f"authentication failed ({code or status}): "
                        f"the server refused the credentials in {self.opts.secret_key} "
                        f"{self.opts.secret_name!r}, or they lack a permission")
        cls = TransientError if status in (408, 429) or status >= 500 else TransferError
        return fail(cls, vfs, rel, f"{code or 'HTTP error'} (HTTP {status})")
