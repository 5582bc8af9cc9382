"""``type = "watch"``: a job per file that arrives in a directory of a VFS."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from aftd.configmodel import InvalidKey
from aftd.triggers.config import TriggerConfig

__all__ = ["WatchTriggerConfig"]


class WatchTriggerConfig(TriggerConfig):
    """A job for each file that arrives in a directory of a VFS, once it is stable. A file
    version — (vfs, path, size, mtime) — fires once, also across restarts; a fired job gets
    the params plus `trigger`, `vfs`, `path` (relative to the VFS root), `size` and `mtime`.
    Temporary names (`*.part`, `*.tmp`, `.~*`, names starting with a dot, aftd's own
    `.aftd-part` files) never fire."""

    RESERVED = ("trigger", "vfs", "path", "size", "mtime")
    EXAMPLE: ClassVar[dict[str, object]] = {"name": "partner-drop", "vfs": "partner",
                                            "path": "outbound", "pattern": "*.csv",
                                            "script": "ingest", "params": {"dest": "archive"}}

    type: Literal["watch"] = Field(description="the kind of trigger; decides the other keys")
    vfs: str = Field(min_length=1, description="the VFS to watch ([vfs.NAME])",
                     examples=["partner"])
    path: str = Field("", description="the directory inside the VFS (empty: its root)",
                      examples=["outbound"])
    pattern: str = Field("*", min_length=1, description='glob on the file name ("*.csv")')
    recursive: bool = Field(False, description="watch subdirectories too (not hidden ones, "
                            "nor move_to)")
    poll_s: float = Field(30.0, ge=0.1, le=86400, description=(
        "seconds between listings of a polled VFS; with inotify, between the safety rescans"))
    stable_s: float = Field(10.0, ge=0, le=86400, description=(
        "size and mtime must stay unchanged this long before a file counts as arrived"))
    after: Literal["leave", "move", "delete"] = Field("leave", description=(
        "what happens to the file once its job succeeded (a failed job leaves it)"))
    move_to: str = Field("", description='with after = "move": a directory inside the same '
                         "VFS (created if missing)", examples=["done"])
    mode: Literal["auto", "inotify", "poll"] = Field("auto", description=(
        "how arrivals are noticed: auto = inotify for a local VFS on a local filesystem, "
        "polling for other VFS types and for network or FUSE mounts; poll forces polling"))

    @field_validator("path", "move_to")
    @classmethod
    def _relative(cls, value: str) -> str:
        parts = [p for p in value.split("/") if p not in ("", ".")]
        if ".." in parts or "\x00" in value:
            raise ValueError("must stay inside the VFS (no '..')")
        return value

    @model_validator(mode="after")
    def _after(self) -> WatchTriggerConfig:
        if self.after == "move" and not self.move_to:
            raise InvalidKey("move_to", 'is required with after = "move"')
        if self.after != "move" and self.move_to:
            raise InvalidKey("move_to", 'only makes sense with after = "move"')
        return self
