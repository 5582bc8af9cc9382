"""``type = "azure"``: a container of an Azure Blob Storage account (the SDK is imported by the
backend only)."""

from __future__ import annotations

import re
from typing import ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from aftd.configmodel import InvalidKey
from aftd.vfs.config import STREAMS_MIN_SIZE, ConnectTimeoutS
from aftd.vfs.objstore_config import (
    ObjectStoreVfsConfig,
    ObjectStreamsMinSize,
    Prefix,
    ReadTimeoutS,
    Retries,
    Streams,
)

__all__ = ["AzureVfsConfig", "account_name_of"]

# Azure's rules: 3-63 lowercase letters, digits and single hyphens, starting with a letter or
# digit; "$root" is the account's root container.
_CONTAINER = re.compile(r"^(?:\$root|[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62})$")
_SECRETS = ("account_key_secret", "sas_secret", "connection_string_secret")


class AzureVfsConfig(ObjectStoreVfsConfig):
    """A container (and a prefix inside it) of an Azure Blob Storage account, or Azurite."""

    EXAMPLE: ClassVar[dict[str, object]] = {
        "name": "blob", "account_url": "https://acct.blob.core.windows.net",
        "container": "drops", "account_key_secret": "blob-key"}

    type: Literal["azure"] = Field(description="the backend; decides the other keys")
    account_url: str = Field("", description=(
        "the Blob service endpoint: https://ACCOUNT.blob.core.windows.net, or path-style "
        "http://127.0.0.1:10000/ACCOUNT for Azurite; may be empty with "
        "connection_string_secret (its BlobEndpoint is used)"),
        examples=["https://acct.blob.core.windows.net"])
    container: str = Field(min_length=1, description="the container", examples=["drops"])
    prefix: Prefix = Field("", description=(
        "the VFS root inside the container, e.g. \"inbound/\" (\"\" = the whole container)"))
    account_key_secret: str = Field("", description=(
        "the secret holding the account's shared key; or sas_secret, or "
        "connection_string_secret"), examples=["blob-key"])
    sas_secret: str = Field("", description=(
        "the secret holding a SAS token (sv=...&sig=...) with read, write, list, delete, "
        "create and add permissions"), examples=["blob-sas"])
    connection_string_secret: str = Field("", description=(
        "the secret holding a connection string (AccountName=...;AccountKey=...;"
        "BlobEndpoint=... or SharedAccessSignature=...)"), examples=["blob-connection-string"])
    block_size_mib: int = Field(8, ge=1, le=4000, description=(
        "MiB per staged block; past 10,000 blocks (78 GiB at 8 MiB) they double every 10,000, "
        "so Azure's 50,000 blocks hold about 300 x this (raise it for larger files)"))
    max_blocks_in_flight: int = Field(4, ge=1, le=64, description=(
        "blocks uploading at once per file (memory: about (this + 1) x block_size_mib)"))
    checksum: bool = Field(True, description=(
        "compute MD5s while uploading, as rclone does: each block carries its own, which the "
        "server checks, and the blob gets its Content-MD5; verify=\"sha256\" relies on them "
        "(false saves the CPU; verification then reads the blob back)"))
    read_chunk_mib: int = Field(8, ge=1, le=256, description="MiB per ranged read request")
    max_reads_in_flight: int = Field(4, ge=1, le=32, description=(
        "ranged reads at once per file (memory: about this x read_chunk_mib)"))
    # To local disk each stream is one ranged GET on a thread (aftd/vfs/objget.py); into
    # SFTP the streams share max_reads_in_flight, so the data in flight is the same.
    streams: Streams = 4
    streams_min_size: ObjectStreamsMinSize = STREAMS_MIN_SIZE
    connect_timeout_s: ConnectTimeoutS = 15.0
    read_timeout_s: ReadTimeoutS = 120.0
    retries: Retries = Field(3, description=(
        "times the SDK retries a failed request (a block, a range) before the copy gives up "
        "on the file"))

    @field_validator("container")
    @classmethod
    def _container(cls, value: str) -> str:
        if not _CONTAINER.match(value):
            raise ValueError("must be 3-63 lowercase letters, digits and single hyphens "
                             "(Azure's container naming rules), or $root")
        return value

    @field_validator("account_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL, e.g. https://ACCOUNT.blob.core.windows.net")
        if parts.query or parts.fragment:
            raise ValueError("must not carry a query (put a SAS token in sas_secret)")
        if account_name_of(value) is None:
            raise ValueError("names no account: use https://ACCOUNT.blob.core.windows.net "
                             "or a path-style URL http://HOST:PORT/ACCOUNT")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _check(self) -> AzureVfsConfig:
        given = [k for k in _SECRETS if getattr(self, k)]
        if len(given) != 1:
            raise InvalidKey(given[1] if given else _SECRETS[0],
                             "exactly one of account_key_secret, sas_secret or "
                             "connection_string_secret is required")
        if not self.account_url and not self.connection_string_secret:
            raise InvalidKey("account_url", "is required (unless connection_string_secret "
                             "gives the endpoint)")
        return self


def account_name_of(url: str) -> str | None:
    """The storage account an endpoint URL names: the first label of ``ACCOUNT.blob.*``, else
    the first path segment of a path-style (emulator) URL."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    labels = host.split(".")
    if len(labels) > 2 and labels[1] == "blob":
        return labels[0]
    first = parts.path.strip("/").split("/")[0]
    return first or None
