"""``[vfs.NAME]`` entries: validated at load, errors name the entry and key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aftd.configparse import Section

__all__ = ["VfsConfig", "parse_vfs_section"]

KNOWN_TYPES = ("local", "sftp")


@dataclass(frozen=True)
class VfsConfig:
    name: str
    type: str
    root: str
    # Backend-specific keys, already type-checked; secret *names* only, never values.
    options: dict[str, Any] = field(default_factory=dict)


def parse_vfs_section(sec: Section) -> dict[str, VfsConfig]:
    out: dict[str, VfsConfig] = {}
    for name in sec.data:
        entry = sec.table(name)
        vtype = entry.str("type", "", choices=KNOWN_TYPES)
        if not vtype:
            raise entry.error("type", f"is required (one of {', '.join(KNOWN_TYPES)})")
        root = entry.required_str("root")
        if vtype == "local" and not root.startswith("/"):
            raise entry.error("root", "must be an absolute path")
        out[name] = VfsConfig(name=name, type=vtype, root=root)
        entry.finish()
    return out
