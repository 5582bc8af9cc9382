"""What the object-store entries (``type = "s3"``, ``"azure"``, ``"gcs"``) share: no ``root``
(a ``prefix`` inside the bucket or container takes its place), how that prefix is checked, and
the bounds of their timeouts and retries.

The shared keys are annotated types rather than fields of :class:`ObjectStoreVfsConfig`: a
field declared on a base class comes before the subclass's own in the generated example config
and reference, and each backend lists its keys in the order that reads best for it (the bucket
before the prefix, the timeouts last). Defaults and descriptions that differ between backends
stay with the backend's field.

Imports nothing third-party beyond pydantic, like every ``*_config`` module.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, field_validator
from pydantic.json_schema import SkipJsonSchema

from aftd.vfs.config import StreamsMinSize, VfsConfig
from aftd.vfs.objkeys import check_prefix

__all__ = ["ObjectStoreVfsConfig", "ObjectStreamsMinSize", "Prefix", "ReadTimeoutS", "Retries",
           "Streams"]

# The VFS root inside the bucket or container, normalised to "a/b/" (or ""); see objkeys.
Prefix = Annotated[str, AfterValidator(check_prefix)]
# Seconds a request may send or receive nothing (each backend gives its default; S3 its own
# description too).
ReadTimeoutS = Annotated[float, Field(ge=1, description=(
    "a request that sends or receives nothing for this long fails"))]
# Retries of a failed request (a part, a block, a range) before the copy gives up on the file.
Retries = Annotated[int, Field(ge=0, le=20)]
# Parallel ranged GETs for one large download (README: "Object stores").
Streams = Annotated[int, Field(ge=1, le=32, description=(
    "ranged GETs at once for one large download into a destination that can write at offsets "
    "(local, SFTP), as rclone's multi-thread streams: each range resumes by itself, all are "
    "pinned to one version of the object, and the file is published by one rename after the "
    "checks; 1: one GET at a time"))]
ObjectStreamsMinSize = Annotated[StreamsMinSize, Field(description=(
    "objects at least this large (bytes) are downloaded as `streams` ranges"))]


class ObjectStoreVfsConfig(VfsConfig):
    """The keys every object-store entry has; each backend's model adds its own."""

    # Object stores have no directory to start from: `prefix` is the root. Kept out of the
    # schema, since any value but "" is an error.
    root: SkipJsonSchema[str] = Field("", exclude=True)

    @field_validator("root")
    @classmethod
    def _no_root(cls, value: str) -> str:
        if value:
            raise ValueError("an object store has no root directory: use prefix")
        return value
