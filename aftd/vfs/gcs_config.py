"""``type = "gcs"``: a bucket of Google Cloud Storage (or fake-gcs-server), through the JSON
API (the backend's modules are imported only when it is used)."""

from __future__ import annotations

import re
from typing import ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from aftd.vfs.config import STREAMS_MIN_SIZE, ConnectTimeoutS
from aftd.vfs.objstore_config import (
    ObjectStoreVfsConfig,
    ObjectStreamsMinSize,
    Prefix,
    ReadTimeoutS,
    Retries,
    Streams,
)

__all__ = ["GCS_CHUNK_UNIT", "GcsVfsConfig"]

# Google's rules: 3-63 characters (222 with dots, 63 per dot-separated part) of lowercase
# letters, digits, "-", "_" and ".", starting and ending with a letter or digit.
_BUCKET = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{1,220})[a-z0-9]$")
# Resumable upload chunks must be multiples of 256 KiB (the last one excepted).
GCS_CHUNK_UNIT = 256 * 1024


class GcsVfsConfig(ObjectStoreVfsConfig):
    """A bucket (and a prefix inside it) of Google Cloud Storage, or of an emulator."""

    EXAMPLE: ClassVar[dict[str, object]] = {
        "name": "gcs", "bucket": "exports", "credentials_secret": "gcs-sa-json"}

    type: Literal["gcs"] = Field(description="the backend; decides the other keys")
    bucket: str = Field(min_length=1, description="the bucket", examples=["exports"])
    prefix: Prefix = Field("", description=(
        "the VFS root inside the bucket, e.g. \"inbound/\" (\"\" = the whole bucket)"))
    credentials_secret: str = Field("", description=(
        "the secret holding a service-account key (the JSON file Google issues); empty: "
        "anonymous requests (public buckets, emulators)"), examples=["gcs-sa-json"])
    endpoint: str = Field("", description=(
        "empty: Google (https://storage.googleapis.com); an emulator's URL "
        "(fake-gcs-server), which is sent no token"), examples=["http://127.0.0.1:4443"])
    chunk_size_mib: int = Field(16, ge=1, le=1024, description=(
        "MiB per resumable-upload request (files up to this size go in one request; memory "
        "per upload: about twice this)"))
    streams: Streams = 4
    streams_min_size: ObjectStreamsMinSize = STREAMS_MIN_SIZE
    connect_timeout_s: ConnectTimeoutS = 15.0
    read_timeout_s: ReadTimeoutS = 120.0
    retries: Retries = Field(3, description=(
        "times a failed request (a chunk, a read, a listing) is retried, with backoff, "
        "before the copy gives up on the file"))

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        if not _BUCKET.match(value) or ".." in value or \
                any(len(p) > 63 for p in value.split(".")):
            raise ValueError("must be 3-63 lowercase letters, digits, '-', '_' or '.' "
                             "(Google's bucket naming rules)")
        return value

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if not value:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL, e.g. http://127.0.0.1:4443")
        if parts.path.strip("/") or parts.query or parts.fragment:
            raise ValueError("must be the server's base URL, without a path or query")
        return value.rstrip("/")
