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
    """One SSH connection, counted in the pool from the moment it starts connecting (so
    several connect at once and nobody over-connects); ``task`` gives the connection."""

    task: asyncio.Future[asyncssh.SSHClientConnection]
    sessions: list[_Session] = field(default_factory=list)
    opening: int = 0  # sessions being started on it right now

    @property
    def conn(self) -> asyncssh.SSHClientConnection | None:
        """The connection once it is established, else None."""
        t = self.task
        if not t.done() or t.cancelled() or t.exception() is not None:
            return None
        return t.result()

    def alive(self) -> bool:
        if not self.task.done():
            return True  # still connecting
        conn = self.conn
        return conn is not None and not conn.is_closed()


class SftpPool:
    def __init__(self, vfs: str, opts: dict[str, Any], secrets: SecretResolver) -> None:
        self.vfs = vfs
        self.opts = opts
        self.secrets = secrets
        self._conns: list[_Conn] = []
        self._lock = asyncio.Lock()
        self._changed = asyncio.Condition(self._lock)  # a session finished starting
        self._spare = 0  # sessions :meth:`warm` is starting for whoever asks next
        self._warming: set[asyncio.Future[None]] = set()

    @property
    def where(self) -> str:
        return f"{self.opts['user']}@{self.opts['host']}:{self.opts['port']}"

    @asynccontextmanager
    async def session(self) -> AsyncIterator[asyncssh.SFTPClient]:
        sess = await self._acquire()  # counted as a user already
        try:
            yield sess.sftp
        finally:
            sess.users -= 1

    async def run(self, command: str, *, limit_s: float) -> asyncssh.SSHCompletedProcess:
        """Run ``command`` over an exec channel of a pooled connection (output as bytes)."""
        async with self._lock:
            self.discard_dead()
            if not self._conns:
                self._conns.append(self._new_conn())
            c = min(self._conns, key=lambda c: len(c.sessions))
        conn = await asyncio.shield(c.task)
        return await conn.run(command, check=False, timeout=limit_s, encoding=None,
                              stdin=asyncssh.DEVNULL)

    def discard_dead(self) -> None:
        self._conns = [c for c in self._conns if c.alive()]

    async def aclose(self) -> None:
        for w in list(self._warming):
            w.cancel()
        await asyncio.gather(*self._warming, return_exceptions=True)
        conns, self._conns = self._conns, []
        for c in conns:
            if not c.task.done():
                c.task.cancel()
        await asyncio.gather(*(c.task for c in conns), return_exceptions=True)
        live = [c.conn for c in conns if c.conn is not None]
        for conn in live:
            conn.close()
        for conn in live:
            await conn.wait_closed()

    def warm(self, n: int) -> None:
        """Start, in the background and all at once, the sessions (and connections) needed
        for ``n`` sessions in the pool, within its limits: on a long path each costs several
        round trips, so N parallel streams then wait for one start, not N. Leases asked for
        meanwhile wait for these instead of sharing a busy session."""
        task = asyncio.ensure_future(self._warm(n))
        self._warming.add(task)
        task.add_done_callback(self._warming.discard)

    async def _warm(self, n: int) -> None:
        claims: list[_Conn] = []
        async with self._changed:
            self.discard_dead()
            have = sum(len(c.sessions) + c.opening for c in self._conns)
            while have < n and (slot := self._slot()) is not None:
                slot.opening += 1
                self._spare += 1
                claims.append(slot)
                have += 1
        outcomes = await asyncio.gather(*(self._start_spare(c) for c in claims),
                                        return_exceptions=True)
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        if failed:  # whoever leases next connects again and sees the error
            log.info("sftp_warm_failed", vfs=self.vfs, sessions=len(failed),
                     error=str(failed[0]))

    async def _start_spare(self, c: _Conn) -> None:
        try:
            await self._open_session(c)
        finally:
            c.opening -= 1
            self._spare -= 1
            async with self._changed:
                self._changed.notify_all()

    def _slot(self) -> _Conn | None:
        """A connection with room for one more session (a new one while the limit allows)."""
        grow = next((c for c in self._conns
                     if len(c.sessions) + c.opening < self.opts["max_sessions"]), None)
        if grow is None and len(self._conns) < self.opts["max_connections"]:
            grow = self._new_conn()
            self._conns.append(grow)
        return grow

    def _new_conn(self) -> _Conn:
        return _Conn(asyncio.ensure_future(self._connect()))

    async def _acquire(self) -> _Session:
        async with self._changed:  # serialise growth so a burst of jobs does not over-connect
            while True:
                self.discard_dead()
                sessions = [s for c in self._conns for s in c.sessions]
                idle = [s for s in sessions if s.users == 0]
                if idle:
                    idle[0].users += 1
                    return idle[0]
                if self._spare:  # warm() is starting sessions: one will be idle soon
                    await self._changed.wait()
                    continue
                grow = self._slot()
                if grow is not None:
                    grow.opening += 1
                    break
                if sessions:
                    least = min(sessions, key=lambda s: s.users)
                    least.users += 1
                    return least
                await self._changed.wait()  # every slot is a session still starting
        # Outside the lock: connections and sessions (a few round trips each) start in
        # parallel, so N ranged streams on a long path wait for one start, not N of them.
        try:
            sess = await self._open_session(grow)
            sess.users += 1
            return sess
        finally:
            grow.opening -= 1
            async with self._changed:
                self._changed.notify_all()

    async def _open_session(self, c: _Conn) -> _Session:
        conn = await asyncio.shield(c.task)  # its connect error, if it failed, is raised here
        try:
            sftp = await conn.start_sftp_client()
        except (asyncssh.Error, OSError) as exc:
            conn.close()
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

