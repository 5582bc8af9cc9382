"""Progress reporting seam between the copy engine and the job that runs it.

The runner sets :data:`CURRENT` to the job's sink; the copy engine reports into whatever sink is
current, so the VFS layer never imports the jobs layer.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Protocol

__all__ = ["CURRENT", "BytesObserver", "CountedSink", "ProgressSink", "TransferObserver",
           "add_bytes_observer", "add_transfer_observer", "current", "transfer_finished"]


class ProgressSink(Protocol):
    def add_total(self, files: int = 0, nbytes: int = 0) -> None:
        """Announce more work: files and bytes that will be transferred."""

    def advance(self, files: int = 0, nbytes: int = 0) -> None:
        """Record finished work: bytes written (as they land) and files completed."""


CURRENT: ContextVar[ProgressSink | None] = ContextVar("aftd_progress", default=None)


def current() -> ProgressSink | None:
    return CURRENT.get()


class TransferObserver(Protocol):
    def __call__(self, src_vfs: str, dst_vfs: str, files: int, nbytes: int, ok: bool) -> None:
        """One ``copy_to`` ended: what it moved, and whether it succeeded."""


_OBSERVERS: list[TransferObserver] = []


def add_transfer_observer(observer: TransferObserver) -> None:
    """Process-wide hook (metrics); the VFS layer calls it without knowing who listens."""
    _OBSERVERS.append(observer)


def transfer_finished(src_vfs: str, dst_vfs: str, files: int, nbytes: int, ok: bool) -> None:
    for observer in _OBSERVERS:
        observer(src_vfs, dst_vfs, files, nbytes, ok)


class BytesObserver(Protocol):
    def __call__(self, nbytes: int) -> None:
        """Bytes written by some job's transfer, as they land."""


_BYTES_OBSERVERS: list[BytesObserver] = []


def add_bytes_observer(observer: BytesObserver) -> None:
    """Process-wide hook (the throughput chart) told of every byte any job's sink advances."""
    _BYTES_OBSERVERS.append(observer)


class CountedSink:
    """A job's sink that also tells the bytes observers; the runner installs one per job, so
    inline copies and those reported by worker processes are counted alike."""

    def __init__(self, inner: ProgressSink) -> None:
        self.inner = inner

    def add_total(self, files: int = 0, nbytes: int = 0) -> None:
        self.inner.add_total(files=files, nbytes=nbytes)

    def advance(self, files: int = 0, nbytes: int = 0) -> None:
        self.inner.advance(files=files, nbytes=nbytes)
        if nbytes > 0:
            for observer in _BYTES_OBSERVERS:
                observer(nbytes)
