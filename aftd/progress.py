"""Progress reporting seam between the copy engine and the job that runs it.

The runner sets :data:`CURRENT` to the job's sink; the copy engine reports into whatever sink is
current, so the VFS layer never imports the jobs layer.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Protocol

__all__ = ["CURRENT", "ProgressSink", "current"]


class ProgressSink(Protocol):
    def add_total(self, files: int = 0, nbytes: int = 0) -> None:
        """Announce more work: files and bytes that will be transferred."""

    def advance(self, files: int = 0, nbytes: int = 0) -> None:
        """Record finished work: bytes written (as they land) and files completed."""


CURRENT: ContextVar[ProgressSink | None] = ContextVar("aftd_progress", default=None)


def current() -> ProgressSink | None:
    return CURRENT.get()
