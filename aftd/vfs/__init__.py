"""Virtual filesystems: the backend protocol, the backends, the registry, the copy engine and
the handle scripts get.

Backends are imported lazily by :mod:`aftd.vfs.registry`; importing this package stays cheap.
"""

from __future__ import annotations

from aftd.vfs.base import Features, FileInfo, UnknownVfsError, Vfs
from aftd.vfs.config import VfsConfig, parse_vfs_section
from aftd.vfs.handle import VfsHandle
from aftd.vfs.result import CopyResult

__all__ = [
    "CopyResult",
    "Features",
    "FileInfo",
    "UnknownVfsError",
    "Vfs",
    "VfsConfig",
    "VfsHandle",
    "parse_vfs_section",
]
