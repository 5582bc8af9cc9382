"""Connecting to Azure Blob Storage: the SDK client built from a secret, and the SDK's errors
turned into aftd's.

The credential is resolved from the secret chain when the VFS first connects, and again after
the server refused it (a rotated key is picked up without a restart). A malformed one is an
error naming the secret; no message ever carries the secret or a SAS signature (URLs in SDK
messages are cut at the query).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob.aio import BlobServiceClient, ExponentialRetry

from aftd.errors import SecretError, TransferError
from aftd.secrets.base import SecretResolver
from aftd.vfs.azure_config import account_name_of
from aftd.vfs.base import PathExistsError, PathNotFoundError, TransientError, fail

__all__ = ["AzureOptions", "ContainerMissing", "connect", "error_code", "is_auth_failure",
           "translate"]

_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_QUERY = re.compile(r"\?[^\s'\"]*")
_SECRETS = ("account_key_secret", "sas_secret", "connection_string_secret")


class ContainerMissing(TransferError):
    """The configured container does not exist."""


@dataclass(frozen=True)
class AzureOptions:
    """The keys of a ``[vfs.NAME]`` entry of type ``azure`` the backend uses."""

    vfs: str
    account_url: str
    container: str
    prefix: str
    account_key_secret: str
    sas_secret: str
    connection_string_secret: str
    block_size: int
    max_blocks_in_flight: int
    read_chunk: int
    max_reads_in_flight: int
    connect_timeout_s: float
    read_timeout_s: float
    retries: int
    checksum: bool

    @classmethod
    def of(cls, name: str, opts: dict[str, Any]) -> AzureOptions:
        mib = 1 << 20
        return cls(vfs=name, account_url=opts["account_url"], container=opts["container"],
                   prefix=opts["prefix"], account_key_secret=opts["account_key_secret"],
                   sas_secret=opts["sas_secret"],
                   connection_string_secret=opts["connection_string_secret"],
                   block_size=opts["block_size_mib"] * mib,
                   max_blocks_in_flight=opts["max_blocks_in_flight"],
                   read_chunk=opts["read_chunk_mib"] * mib,
                   max_reads_in_flight=opts["max_reads_in_flight"],
                   connect_timeout_s=opts["connect_timeout_s"],
                   read_timeout_s=opts["read_timeout_s"], retries=opts["retries"],
                   checksum=opts["checksum"])

    @property
    def secret_key(self) -> str:
        """Which ``*_secret`` key is configured."""
        return next(k for k in _SECRETS if getattr(self, k))

    @property
    def secret_name(self) -> str:
        return str(getattr(self, self.secret_key))


async def connect(opts: AzureOptions, secrets: SecretResolver) -> BlobServiceClient:
    """The service client, with the credential from the secret chain (not yet used)."""
    try:
        value = (await secrets.get(opts.secret_name)).strip()
    except SecretError as exc:
        raise TransferError(f"vfs {opts.vfs!r}: {opts.secret_key}: {exc}", vfs=opts.vfs) from None
    kwargs = _client_kwargs(opts)
    if opts.connection_string_secret:
        return _from_connection_string(opts, value, kwargs)
    if opts.account_key_secret:
        _check_key(opts, value)
        name = account_name_of(opts.account_url)
        credential: Any = {"account_name": name, "account_key": value}
    else:
        credential = _check_sas(opts, value)
    return BlobServiceClient(opts.account_url, credential=credential, **kwargs)


def _client_kwargs(opts: AzureOptions) -> dict[str, Any]:
    return {
        # Uploads decide themselves between one request and blocks; reads fetch read_chunk
        # bytes per ranged request, so memory does not grow with the file.
        "max_single_put_size": opts.block_size,
        "max_block_size": opts.block_size,
        "max_single_get_size": opts.read_chunk,
        "max_chunk_get_size": opts.read_chunk,
        "connection_timeout": opts.connect_timeout_s,
        "read_timeout": opts.read_timeout_s,
        # The SDK's default waits 15 s, then 18 s, 24 s... before retries: far too long for a
        # server restart on loopback, and a copy retries the file itself afterwards.
        "retry_policy": ExponentialRetry(initial_backoff=1, increment_base=2,
                                         retry_total=opts.retries, random_jitter_range=1),
    }


def _from_connection_string(opts: AzureOptions, value: str,
                            kwargs: dict[str, Any]) -> BlobServiceClient:
    try:
        client = BlobServiceClient.from_connection_string(value, **kwargs)
    except (ValueError, KeyError, AzureError):
        raise TransferError(f"vfs {opts.vfs!r}: connection_string_secret "
                            f"{opts.connection_string_secret!r} is not an Azure Storage "
                            "connection string", vfs=opts.vfs) from None
    if opts.account_url and client.url.rstrip("/") != opts.account_url.rstrip("/"):
        raise TransferError(f"vfs {opts.vfs!r}: account_url {opts.account_url!r} is not the "
                            "blob endpoint of the connection string in connection_string_secret "
                            f"{opts.connection_string_secret!r} (leave account_url empty)",
                            vfs=opts.vfs)
    return client


def _check_key(opts: AzureOptions, value: str) -> None:
    try:
        ok = len(base64.b64decode(value, validate=True)) >= 16
    except (binascii.Error, ValueError):
        ok = False
    if not ok:
        raise TransferError(f"vfs {opts.vfs!r}: account_key_secret {opts.account_key_secret!r} "
                            "is not a base64 storage account key", vfs=opts.vfs)


def _check_sas(opts: AzureOptions, value: str) -> str:
    token = value.lstrip("?")
    if "sig=" not in token or any(c.isspace() for c in token):
        raise TransferError(f"vfs {opts.vfs!r}: sas_secret {opts.sas_secret!r} is not a SAS "
                            "token (expected sv=...&sig=...)", vfs=opts.vfs)
    return token


def translate(opts: AzureOptions, rel: str, exc: BaseException) -> TransferError:
    """The aftd error for an SDK exception about ``rel``, without secrets or signatures."""
    vfs = opts.vfs
    code = error_code(exc)
    if code == "ContainerNotFound":
        return fail(ContainerMissing, vfs, rel, f"container {opts.container!r} does not exist")
    if isinstance(exc, ResourceNotFoundError):
        return fail(PathNotFoundError, vfs, rel, "no such file or directory")
    if isinstance(exc, ResourceExistsError) and code == "BlobAlreadyExists":
        return fail(PathExistsError, vfs, rel, "target exists")
    status = getattr(exc, "status_code", None)
    if isinstance(exc, ClientAuthenticationError) or status == 403:
        return fail(TransferError, vfs, rel, f"authentication failed ({code or 'HTTP 403'}): "
                    f"the server refused the credentials in {opts.secret_key} "
                    f"{opts.secret_name!r}, or they lack a permission")
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return fail(TransientError, vfs, rel, f"connection to the Blob service failed: "
                    f"{_clean(exc)}")
    if isinstance(exc, HttpResponseError):
        cls = TransientError if status in _RETRY_STATUS else TransferError
        return fail(cls, vfs, rel, f"HTTP {status} {code}".rstrip())
    return fail(TransferError, vfs, rel, f"{type(exc).__name__}: {_clean(exc)}")


def error_code(exc: BaseException) -> str:
    """The service's error code (``BlobNotFound``...), or ""."""
    code = getattr(exc, "error_code", None) or ""
    return str(getattr(code, "value", code))


def is_auth_failure(exc: BaseException) -> bool:
    return isinstance(exc, ClientAuthenticationError) or \
        getattr(exc, "status_code", None) == 403


def _clean(exc: BaseException) -> str:
    """The first line of an SDK message, any URL query (a SAS signature) cut off."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return _QUERY.sub("?…", text)[:200]
