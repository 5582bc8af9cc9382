"""What a copy reports: counts, checksums, and every entry it skipped or failed, with why."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = ["CopyResult", "Failed", "Skipped"]


class Skipped(NamedTuple):
    """An entry a tree copy left out on purpose: ``(path, reason)``, path in the source VFS."""

    path: str
    reason: str


class Failed(NamedTuple):
    """A file (or directory) a ``on_error="continue"`` copy could not deliver: ``(path, error)``."""

    path: str
    error: str


@dataclass(frozen=True)
class CopyResult:
    """What ``copy_to`` did: ``files`` and ``bytes`` copied, ``duration_s``, ``checksums``
    (destination path → sha256 when verified), ``verified_by`` (destination path → how the
    destination checked what it stored: ``"read-back"``, ``"remote-sha256"``,
    ``"server-sha256"``...), ``server_side`` (files the destination copied itself, without
    the bytes passing through aftd), ``skipped`` (files the overwrite policy kept, plus skipped
    links and special files), ``skipped_links`` and ``skipped_special`` (:class:`Skipped`
    pairs), and ``failed`` (:class:`Failed` pairs, with ``on_error="continue"`` only)."""

    files: int  # files copied (skipped ones not counted)
    bytes: int
    duration_s: float
    checksums: dict[str, str] = field(default_factory=dict)  # dest path -> sha256 when verified
    # Entries not copied on purpose: files the overwrite policy kept, plus skipped_links and
    # skipped_special.
    skipped: int = 0
    skipped_links: list[Skipped] = field(default_factory=list)  # symlinks not followed
    skipped_special: list[Skipped] = field(default_factory=list)  # FIFOs, sockets, devices
    failed: list[Failed] = field(default_factory=list)  # only with on_error="continue"
    verified_by: dict[str, str] = field(default_factory=dict)  # dest path -> method
    server_side: int = 0  # of `files`: copied by the destination server itself

    @property
    def ok(self) -> bool:
        """Every file was delivered or skipped on purpose."""
        return not self.failed

    @property
    def verified_by_summary(self) -> dict[str, int]:
        """How many files each method verified, e.g. ``{"remote-sha256": 199, "read-back": 1}``."""
        return dict(Counter(self.verified_by.values()))

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values, for a log line or a report."""
        return {
            "files": self.files, "bytes": self.bytes, "duration_s": round(self.duration_s, 3),
            "skipped": self.skipped, "server_side": self.server_side,
            "checksums": dict(self.checksums), "verified_by": dict(self.verified_by),
            "verified_by_summary": self.verified_by_summary,
            "skipped_links": [s._asdict() for s in self.skipped_links],
            "skipped_special": [s._asdict() for s in self.skipped_special],
            "failed": [f._asdict() for f in self.failed],
        }
