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
from aftd.vfs.base import SecretResolver, TransientError

__all__ = ["SftpPool"]

log = structlog.get_logger(__name__)
# Receive window and largest packet we accept: a bigger window keeps a full pipeline of reads
# in flight (asyncssh's 2 MiB default stalls 16 x 255 KiB requests), bigger packets mean fewer
# packets to decrypt per byte.
WINDOW = 8 << 20
MAX_PKTSIZE = 32768  # sshd sends at most 32 KiB per packet anyway
_MSG_IGNORE = 2
_EMPTY_STRING = b"\0\0\0\0"
# Ciphers for which the MSG_IGNORE before each packet (a CBC-era countermeasure) is useless.
_NO_IGNORE_NEEDED = ("-gcm@openssh.com", "chacha20-poly1305@openssh.com", "-ctr")


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

    def alive(self) -> bool:
        return not self.conn.is_closed()


class SftpPool:
    def __init__(self, vfs: str, opts: dict[str, Any], secrets: SecretResolver) -> None:
        self.vfs = vfs
        self.opts = opts
        self.secrets = secrets
        self._conns: list[_Conn] = []
        self._lock = asyncio.Lock()

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

    def discard_dead(self) -> None:
        self._conns = [c for c in self._conns if c.alive()]

    async def aclose(self) -> None:
        conns, self._conns = self._conns, []
        for c in conns:
            c.conn.close()
        for c in conns:
            await c.conn.wait_closed()

    async def _acquire(self) -> _Session:
        async with self._lock:  # serialise growth so a burst of jobs does not over-connect
            self.discard_dead()
            sessions = [s for c in self._conns for s in c.sessions]
            idle = [s for s in sessions if s.users == 0]
            if idle:
                return idle[0]
            for c in self._conns:
                if len(c.sessions) < self.opts["max_sessions"]:
                    return await self._open_session(c)
            if len(self._conns) < self.opts["max_connections"]:
                c = _Conn(await self._connect())
                self._conns.append(c)
                return await self._open_session(c)
            return min(sessions, key=lambda s: s.users)

    async def _open_session(self, c: _Conn) -> _Session:
        try:
            sftp = await c.conn.start_sftp_client()
        except (asyncssh.Error, OSError) as exc:
            c.conn.close()
            raise TransientError(f"vfs {self.vfs!r}: cannot open an SFTP session on "
                                 f"{self.where}: {exc}", vfs=self.vfs) from None
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
        _coalesce_sends(conn)
        _skip_ignore_padding(conn)
        _feed_whole_packets(conn)
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


def _coalesce_sends(conn: asyncssh.SSHClientConnection) -> None:
    """Batch the SSH packets produced in one loop iteration into one socket write.

    asyncssh writes every packet (16-32 KiB) to the transport separately, which costs one
    send() syscall each; on loopback those syscalls were the largest single cost of a copy.
    Order is preserved because every packet of the connection goes through this buffer.
    """
    loop = asyncio.get_running_loop()
    send = conn._send  # the one place asyncssh hands bytes to the transport
    buf: list[bytes] = []

    def flush() -> None:
        if buf:
            data = b"".join(buf)
            buf.clear()
            send(data)

    def queued(data: bytes) -> None:
        if not buf:
            loop.call_soon(flush)
        buf.append(data)

    conn._send = queued  # type: ignore[method-assign]


def _skip_ignore_padding(conn: asyncssh.SSHClientConnection) -> None:
    """Stop asyncssh from sending an empty MSG_IGNORE packet ahead of every packet.

    That padding defends CBC modes against chosen-plaintext attacks; with AEAD or CTR ciphers
    it buys nothing and doubles the packets to encrypt and send (about a third of the CPU of an
    upload). asyncssh inserts it through ``self.send_packet``, so an instance-level wrapper can
    drop exactly those; anything else, and any CBC cipher, is left alone.
    """
    cipher = str(conn.get_extra_info("send_cipher") or "")
    if not cipher.endswith(_NO_IGNORE_NEEDED):
        return
    send_packet = conn.send_packet

    def without_padding(pkttype: int, *args: bytes, handler: Any = None) -> None:
        if pkttype == _MSG_IGNORE and args == (_EMPTY_STRING,):
            return
        send_packet(pkttype, *args, handler=handler)

    conn.send_packet = without_padding  # type: ignore[method-assign]


def _feed_whole_packets(conn: asyncssh.SSHClientConnection) -> None:
    """Hand asyncssh the received bytes one SSH packet at a time (AES-GCM framing).

    asyncssh keeps unparsed input in one ``bytes`` and re-slices the remainder after every
    packet, so a 256 KiB socket read holding eight 32 KiB packets copies ~1 MiB (profiled:
    ~17% of a download's CPU). With AES-GCM the packet length is sent in clear, so we can cut
    the read at packet boundaries: each piece then lands in an empty buffer (no concatenation)
    and leaves nothing behind to re-slice. Any split of the byte stream is valid input to
    ``data_received``, so a wrong guess here can only cost speed, never correctness: every byte
    is passed on at once and in order. Other ciphers (length encrypted) and any asyncssh whose
    internals differ get the original method untouched.
    """
    try:
        from asyncssh.encryption import GCMEncryption

        orig = conn.data_received
        want_hdr, want_rest = conn._recv_pkthdr, conn._recv_packet
        conn._inpbuf, conn._recv_handler, conn._recv_macsize  # noqa: B018 (probe)
    except (ImportError, AttributeError):
        log.debug("sftp_packet_feed_unavailable")
        return

    def next_packet(data: bytes, off: int) -> int:
        """Bytes of ``data[off:]`` that complete the packet asyncssh is parsing, 0 if unknown."""
        if not isinstance(conn._recv_encryption, GCMEncryption):
            return 0
        have = conn._inpbuf
        handler = conn._recv_handler
        if handler == want_rest:  # header parsed, body incomplete
            return 4 + conn._pktlen + conn._recv_macsize - conn._recv_blocksize - len(have)
        if handler != want_hdr or len(have) >= 4 or off + 4 - len(have) > len(data):
            return 0
        length = int.from_bytes((have + data[off:off + 4 - len(have)]), "big")
        return 4 + length + conn._recv_macsize - len(have)

    def feed(data: bytes, datatype: Any = None) -> None:
        off, end = 0, len(data)
        while True:
            take = next_packet(data, off)
            if take <= 0 or off + take >= end:
                break
            orig(data[off:off + take], datatype)
            off += take
        orig(data[off:] if off else data, datatype)

    conn.data_received = feed  # type: ignore[method-assign]
