"""Virtual filesystems: the backend protocol, the backends, the registry and the copy engine.

Backends are imported lazily by :mod:`aftd.vfs.registry`; importing this package stays cheap.
"""

from __future__ import annotations

from aftd.vfs.base import Features, FileInfo, SecretResolver, UnknownVfsError, Vfs
from aftd.vfs.config import VfsConfig, parse_vfs_section
from aftd.vfs.copy import CopyResult

__all__ = [
    "CopyResult",
    "Features",
    "FileInfo",
    "SecretResolver",
    "UnknownVfsError",
    "Vfs",
    "VfsConfig",
    "parse_vfs_section",
]
