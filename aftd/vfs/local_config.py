"""``type = "local"``: a directory of this host."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from aftd.vfs.config import VfsConfig
from aftd.vfs.sftp_config import SFTP_MAX_REQUEST

__all__ = ["LocalVfsConfig"]


class LocalVfsConfig(VfsConfig):
    """A directory of this host; paths never leave it (symlinks included)."""

    EXAMPLE: ClassVar[dict[str, object]] = {"name": "archive", "root": "/srv/archive"}

    type: Literal["local"] = Field(description="the backend; decides the other keys")
    root: str = Field(min_length=1, description="absolute path of the directory",
                      examples=["/srv/archive"])
    # A multiple of the SFTP request size, so chunks split evenly.
    chunk_size: int = Field(4 * SFTP_MAX_REQUEST, ge=4096, le=64 << 20, description=(
        "bytes per read when this VFS is a copy's source"))

    @field_validator("root")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must be an absolute path")
        return value
