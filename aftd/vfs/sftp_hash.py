"""Verifying what an SFTP server stored: a hash command on the server, else a read-back.

SFTP itself cannot hash a file, so, like rclone, we run ``sha256sum -- PATH`` over an SSH exec
channel of a pooled connection (``sha256sum_command`` in the VFS config; empty turns it off). The
server hashes the bytes on its disk, which is what "verified at the destination" means, and no
byte crosses the network again.

A server may refuse it: no shell (``ForceCommand internal-sftp``), a chroot the shell does not
share, no ``sha256sum``. Any failure to get a digest turns the command off for this VFS (logged
once) and the file is read back instead. A digest that disagrees is not trusted on its own
either: the shell could see another file under that path (a chrooted SFTP session). The file is
read back; if the read-back agrees with what was sent, the command is turned off as unreliable,
and only a read-back that disagrees fails the copy.
"""

from __future__ import annotations

import re
import shlex

import asyncssh
import structlog

from aftd.vfs.base import (
    VERIFIED_READ_BACK,
    VERIFIED_REMOTE_SHA256,
    StreamDigests,
    Vfs,
    mismatch,
    read_back_sha256,
)
from aftd.vfs.sftp_conn import SftpPool

__all__ = ["RemoteHasher", "parse_sha256sum"]

log = structlog.get_logger(__name__)
# GNU sha256sum escapes odd file names and then starts the line with a backslash.
_LINE = re.compile(rb"^\\?([0-9a-f]{64}) ")
# Hashing runs at disk speed on the server; allow a slow disk, but not forever.
_BASE_TIMEOUT_S = 60.0
_MIN_RATE = 20e6  # bytes per second
_PASSING = (TimeoutError, asyncssh.ConnectionLost, asyncssh.DisconnectError, ConnectionError)


def parse_sha256sum(output: bytes) -> str | None:
    """The digest from ``sha256sum``'s output, or None if it printed something else."""
    m = _LINE.match(output)
    return m.group(1).decode() if m else None


class RemoteHasher:
    """The remote-command verification of one SFTP VFS (remembers when the server refuses)."""

    def __init__(self, vfs: Vfs, pool: SftpPool, command: str) -> None:
        self.vfs = vfs
        self.pool = pool
        self.command = command
        self.usable = bool(command)

    async def verify(self, rel: str, full: str, expected: StreamDigests) -> str:
        remote = await self._remote(rel, full, expected.size) if self.usable else None
        if remote == expected.sha256:
            return VERIFIED_REMOTE_SHA256
        got = await read_back_sha256(self.vfs, rel)
        if got != expected.sha256:
            raise mismatch(self.vfs.name, rel, expected.sha256, got)
        if remote is not None:  # the command hashed something else: stop asking it
            self._give_up(rel, "its digest disagreed with a read-back of the file")
        return VERIFIED_READ_BACK

    async def _remote(self, rel: str, full: str, size: int) -> str | None:
        argv = f"{self.command} -- {shlex.quote(full)}"
        timeout = _BASE_TIMEOUT_S + size / _MIN_RATE
        try:
            done = await self.pool.run(argv, limit_s=timeout)
        except _PASSING as exc:  # says nothing about the server: read back this once
            log.info("sftp_remote_hash_failed", vfs=self.vfs.name, path=rel,
                     error=f"{type(exc).__name__}: {exc}", fallback=VERIFIED_READ_BACK)
            return None
        except (asyncssh.Error, OSError) as exc:  # e.g. the server refuses exec channels
            self._give_up(rel, f"{type(exc).__name__}: {exc}")
            return None
        stdout = done.stdout if isinstance(done.stdout, bytes) else b""
        digest = parse_sha256sum(stdout) if done.exit_status == 0 else None
        if digest is None:
            stderr = done.stderr if isinstance(done.stderr, bytes) else b""
            self._give_up(rel, f"exit status {done.exit_status}: "
                               f"{stderr.decode(errors='replace').strip()[:200]}")
        return digest

    def _give_up(self, rel: str, reason: str) -> None:
        if self.usable:
            log.warning("sftp_remote_hash_unavailable", vfs=self.vfs.name, path=rel,
                        command=self.command, reason=reason, fallback=VERIFIED_READ_BACK)
        self.usable = False
