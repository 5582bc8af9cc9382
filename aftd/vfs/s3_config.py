"""``type = "s3"``: a bucket (and a key prefix in it) on AWS S3 or any S3-compatible server.

The backend needs aiobotocore (``pip install 'aftd[s3]'``); this module imports nothing
third-party beyond pydantic, so a config with an ``s3`` entry loads without it.
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from aftd.configmodel import InvalidKey
from aftd.vfs.config import STREAMS_MIN_SIZE, ConnectTimeoutS
from aftd.vfs.objstore_config import (
    ObjectStoreVfsConfig,
    ObjectStreamsMinSize,
    Prefix,
    ReadTimeoutS,
    Streams,
)

__all__ = ["MAX_PARTS", "MIN_PART_MIB", "S3VfsConfig"]

MIN_PART_MIB = 5  # S3's smallest part (all but the last)
MAX_PARTS = 10_000  # S3's most parts per upload
# Bucket names as S3 accepts them (3-63 characters; lower case, digits, dots and hyphens).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_ENDPOINT = re.compile(r"^https?://[^/?#\s]+(/[^?#\s]*)?$")


class S3VfsConfig(ObjectStoreVfsConfig):
    """A bucket on AWS S3 or an S3-compatible server (SeaweedFS, MinIO, Ceph, rclone serve s3);
    paths are keys under ``prefix``. Credentials are secret names resolved at connect time."""

    EXAMPLE: ClassVar[dict[str, object]] = {
        "name": "lake", "bucket": "landing", "prefix": "inbound/", "region": "us-east-1",
        "access_key_secret": "lake-ak", "secret_key_secret": "lake-sk"}

    type: Literal["s3"] = Field(description="the backend; decides the other keys")
    bucket: str = Field(description="the bucket", examples=["landing"])
    prefix: Prefix = Field("", description="the VFS root inside the bucket, e.g. "
                           "\"inbound/\"; empty: the whole bucket", examples=["inbound/"])
    region: str = Field("us-east-1", min_length=1, description="the bucket's region (SigV4 "
                        "signs for it)")
    endpoint: str = Field("", description="the server's URL, e.g. http://127.0.0.1:8333; "
                          "empty: AWS", examples=["https://s3.example.net"])
    access_key_secret: str = Field(min_length=1, description="the secret holding the access "
                                   "key id", examples=["lake-ak"])
    secret_key_secret: str = Field(min_length=1, description="the secret holding the secret "
                                   "access key", examples=["lake-sk"])
    addressing: Literal["", "path", "virtual"] = Field("", description=(
        "\"path\" (http://host/bucket/key) or \"virtual\" (http://bucket.host/key); empty: "
        "virtual on AWS, path elsewhere"))
    ca_file: str = Field("", description="PEM file of CAs to trust for an https endpoint; "
                         "empty: the system's")
    part_size_mib: int = Field(16, ge=MIN_PART_MIB, le=5 * 1024, description=(
        "multipart upload part size (raised for files that would need more than 10,000 "
        "parts); files smaller than one part are uploaded in one request"))
    max_parts_in_flight: int = Field(4, ge=1, le=64, description=(
        "parts of one file uploaded at once; memory per upload is about (this + 1) x "
        "part_size_mib"))
    copy_cutoff_mib: int = Field(4768, ge=MIN_PART_MIB, le=5 * 1024, description=(
        "server-side copies of objects larger than this are made in parts of this size "
        "(UploadPartCopy; one CopyObject is limited to 5 GiB)"))
    storage_class: str = Field("", pattern=r"^[A-Z_]*$", description=(
        "storage class of new objects (STANDARD, STANDARD_IA, GLACIER_IR...); empty: the "
        "bucket's default"))
    sse: Literal["", "AES256", "aws:kms"] = Field("", description=(
        "server-side encryption of new objects; empty: the bucket's default"))
    sse_kms_key_id: str = Field("", description="the KMS key for sse = \"aws:kms\"; empty: "
                                "the account's default key")
    streams: Streams = 4
    streams_min_size: ObjectStreamsMinSize = STREAMS_MIN_SIZE
    max_connections: int = Field(16, ge=1, le=256, description="HTTP connections to the server")
    connect_timeout_s: ConnectTimeoutS = 15.0
    read_timeout_s: ReadTimeoutS = Field(60.0, description="a response (or the next bytes of "
                                         "one) within this")

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        if not _BUCKET.match(value) or ".." in value:
            raise ValueError("must be a valid bucket name (3-63 characters: lower-case "
                             "letters, digits, dots and hyphens)")
        return value

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if value and not _ENDPOINT.match(value):
            raise ValueError("must be an http:// or https:// URL (or empty for AWS)")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _check(self) -> S3VfsConfig:
        if self.sse_kms_key_id and self.sse != "aws:kms":
            raise InvalidKey("sse_kms_key_id", "only makes sense with sse = \"aws:kms\"")
        return self

    @property
    def path_style(self) -> bool:
        """Path-style addressing: asked for, or the default for a server other than AWS."""
        return self.addressing == "path" or (not self.addressing and bool(self.endpoint))
