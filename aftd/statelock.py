"""One daemon per state directory: an exclusive ``flock`` on ``state_dir/aftd.lock``.

The lock is taken before any state is read or changed, and held for the life of the process
(the kernel drops it when the process dies, even by ``kill -9``, so there is no stale lock to
clean up). The file records the holder's pid so a refused second instance can name it; the
refused instance opens the file without truncating it and changes nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from aftd.errors import AftdError

__all__ = ["LOCK_NAME", "StateDirLocked", "StateLock"]

LOCK_NAME = "aftd.lock"


class StateDirLocked(AftdError):
    """Another process holds the state directory."""


class StateLock:
    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, state_dir: Path) -> StateLock:
        """Take the lock or raise :class:`StateDirLocked` naming the directory and holder."""
        # Others may traverse (to read the public certificate) but not list the state dir.
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o711)
        path = state_dir / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"pid {holder}" if holder else "another process"
            raise StateDirLocked(f"state dir {state_dir} is in use by another aftd ({who}); "
                                 f"one daemon per state dir (lock file {path})") from None
        except BaseException:
            os.close(fd)
            raise
        lock = cls(path, fd)
        lock._record_pid()
        return lock

    def _record_pid(self) -> None:
        assert self._fd is not None
        data = f"{os.getpid()}\n".encode()
        # Best effort (a full disk): the lock itself is what keeps a second daemon out.
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, data, 0)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the last descriptor drops the flock


def _read_pid(fd: int) -> int | None:
    try:
        raw = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(raw) if raw.isdigit() else None
