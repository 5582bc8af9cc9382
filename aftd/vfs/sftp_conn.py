"""SSH connections for the ``sftp`` backend: connect, authenticate, check the host key, pool.

One :class:`SftpPool` per VFS is shared by every job. It holds up to ``max_connections`` SSH
connections with up to ``max_sessions`` SFTP channels each; an idle channel is reused, a new one
is opened while the limits allow, and beyond that the least busy channel is shared (SFTP
multiplexes requests, so sharing is safe). Dead connections are dropped on the next lease, which
makes reconnecting transparent between operations. Secrets are resolved on every connect.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncssh
import structlog

from aftd.errors import SecretError, TransferError
from aftd.secrets.base import SecretResolver
from aftd.vfs.base import TransientError
from aftd.vfs.sftp_quiet import quiet_session
from aftd.vfs.sftp_send import tune_sftp_writes
from aftd.vfs.sftp_speed import tune_connection

__all__ = ["SftpPool"]

log = structlog.get_logger(__name__)
# Receive window and largest packet we accept: a bigger window keeps a full pipeline of reads
# in flight (asyncssh's 2 MiB default stalls 16 x 255 KiB requests), bigger packets mean fewer
# packets to decrypt per byte.
WINDOW = 16 << 20  # >= MAX_DEPTH (64) requests of 261,120 bytes: the window never limits reads
MAX_PKTSIZE = 32768  # sshd sends at most 32 KiB per packet anyway


class _Client(asyncssh.SSHClient):
    """Records the offered host key so a refusal can show its fingerprint; checks a pin."""

    def __init__(self, pinned: str) -> None:
        self.pinned = pinned
        self.offered = ""

    def validate_host_public_key(self, host: str, addr: str, port: int,
                                 key: asyncssh.SSHKey) -> bool:
        self.offered = f"{key.get_fingerprint('sha256')} ({key.get_algorithm()})"
        return bool(self.pinned) and key.get_fingerprint("sha256") == self.pinned


@dataclass
class _Session:
    sftp: asyncssh.SFTPClient
    users: int = 0


@dataclass
class _Conn:
    conn: asyncssh.SSHClientConnection
    sessions: list[_Session] = field(default_factory=list)
    opening: int = 0  # sessions being started on it right now

    def alive(self) -> bool:
        return not self.conn.is_closed()


class SftpPool:
    def __init__(self, vfs: str, opts: dict[str, Any], secrets: SecretResolver) -> None:
        self.vfs = vfs
        self.opts = opts
        self.secrets = secrets
        self._conns: list[_Conn] = []
        self._lock = asyncio.Lock()
        self._changed = asyncio.Condition(self._lock)  # a session finished starting

    @property
    def where(self) -> str:
        return f"{self.opts['user']}@{self.opts['host']}:{self.opts['port']}"

    @asynccontextmanager
    async def session(self) -> AsyncIterator[asyncssh.SFTPClient]:
        sess = await self._acquire()
        sess.users += 1
        try:
            yield sess.sftp
        finally:
            sess.users -= 1

    async def run(self, command: str, *, limit_s: float) -> asyncssh.SSHCompletedProcess:
        """Run ``command`` over an exec channel of a pooled connection (output as bytes)."""
        async with self._lock:
            self.discard_dead()
            if not self._conns:
                self._conns.append(_Conn(await self._connect()))
            conn = min(self._conns, key=lambda c: len(c.sessions)).conn
        return await conn.run(command, check=False, timeout=limit_s, encoding=None,
                              stdin=asyncssh.DEVNULL)

    def discard_dead(self) -> None:
        self._conns = [c for c in self._conns if c.alive()]

    async def aclose(self) -> None:
        conns, self._conns = self._conns, []
        for c in conns:
            c.conn.close()
        for c in conns:
            await c.conn.wait_closed()

    async def _acquire(self) -> _Session:
        async with self._changed:  # serialise growth so a burst of jobs does not over-connect
            while True:
                self.discard_dead()
                sessions = [s for c in self._conns for s in c.sessions]
                idle = [s for s in sessions if s.users == 0]
                if idle:
                    return idle[0]
                grow = next((c for c in self._conns
                             if len(c.sessions) + c.opening < self.opts["max_sessions"]), None)
                if grow is None and len(self._conns) < self.opts["max_connections"]:
                    grow = _Conn(await self._connect())
                    self._conns.append(grow)
                if grow is not None:
                    grow.opening += 1
                    break
                if sessions:
                    return min(sessions, key=lambda s: s.users)
                await self._changed.wait()  # every slot is a session still starting
        # Outside the lock: sessions (a few round trips each) open in parallel, so N ranged
        # streams on a long path wait for one session start, not N of them.
        try:
            return await self._open_session(grow)
        finally:
            grow.opening -= 1
            async with self._changed:
                self._changed.notify_all()

    async def _open_session(self, c: _Conn) -> _Session:
        try:
            sftp = await c.conn.start_sftp_client()
        except (asyncssh.Error, OSError) as exc:
            c.conn.close()
            raise TransientError(f"vfs {self.vfs!r}: cannot open an SFTP session on "
                                 f"{self.where}: {exc}", vfs=self.vfs) from None
        tune_sftp_writes(sftp)
        quiet_session(sftp)
        sess = _Session(sftp)
        c.sessions.append(sess)
        return sess

    async def _connect(self) -> asyncssh.SSHClientConnection:
        o = self.opts
        client = _Client(o["host_key_sha256"])
        try:
            conn, _ = await asyncssh.create_connection(
                lambda: client, o["host"], o["port"], username=o["user"],
                config=None, agent_path=None, compression_algs=None,
                encryption_algs=list(o["ciphers"]),
                known_hosts=self._known_hosts(),
                keepalive_interval=o["keepalive_s"] or None,
                connect_timeout=o["connect_timeout_s"],
                window=WINDOW, max_pktsize=MAX_PKTSIZE,
                **await self._auth(),
            )
        except asyncssh.HostKeyNotVerifiable:
            raise TransferError(self._host_key_message(client.offered), vfs=self.vfs) from None
        except asyncssh.PermissionDenied:
            raise TransferError(f"vfs {self.vfs!r}: authentication as {self.where} was refused",
                                vfs=self.vfs) from None
        except (TimeoutError, asyncssh.Error, OSError) as exc:
            reason = str(exc) or type(exc).__name__
            raise TransientError(f"vfs {self.vfs!r}: cannot connect to {self.where}: {reason}",
                                 vfs=self.vfs) from None
        tune_connection(conn)
        log.info("sftp_connected", vfs=self.vfs, server=self.where,
                 cipher=conn.get_extra_info("send_cipher"))
        return conn

    def _known_hosts(self) -> Any:
        if self.opts["host_key_sha256"]:
            # An empty trusted set (not None, which would disable checking) makes asyncssh
            # ask _Client.validate_host_public_key, which compares against the pin.
            return asyncssh.import_known_hosts("")
        path = self.opts["known_hosts"]
        try:
            return asyncssh.read_known_hosts(path)
        except (OSError, ValueError) as exc:
            raise TransferError(f"vfs {self.vfs!r}: cannot read known_hosts {path!r}: {exc}",
                                vfs=self.vfs) from None

    def _host_key_message(self, offered: str) -> str:
        pin, kh = self.opts["host_key_sha256"], self.opts["known_hosts"]
        how = f"pinned host_key_sha256 is {pin}" if pin else f"not in known_hosts {kh}"

        return (f"vfs {self.vfs!r}: host key of {self.where} is not trusted ({how}); "
                f"server offered {offered or 'an unrecognised key'}")

    async def _auth(self) -> dict[str, Any]:
        o = self.opts
        if o["password_secret"]:
            return {"password": await self._secret(o["password_secret"]), "client_keys": None,
                    "preferred_auth": "password,keyboard-interactive"}
        data = await self._secret(o["key_secret"])
        passphrase = await self._secret(o["passphrase_secret"]) if o["passphrase_secret"] else None
        try:
            key = asyncssh.import_private_key(data, passphrase)
        except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError, ValueError):
            # The library message could quote key material; name only the secret.
            raise SecretError(f"vfs {self.vfs!r}: secret {o['key_secret']!r} is not a usable "
                              "private key (or the passphrase is wrong)") from None
        return {"client_keys": [key], "preferred_auth": "publickey", "password": None}

    async def _secret(self, name: str) -> str:
        return await self.secrets.get(name)

