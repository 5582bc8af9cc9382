"""Instance-level speed-ups for asyncssh connections (the per-packet cost of a transfer).

asyncssh handles each 32 KiB SSH packet in Python, so per-packet overhead decides throughput.
Each patch here replaces one method *on one connection object* (never the class), checks the
internals it relies on first, and leaves the connection untouched when they differ. None of
them changes what goes over the wire except dropping MSG_IGNORE padding for AEAD/CTR ciphers.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncssh

from aftd.vfs import sftp_fastpath as fp
from aftd.vfs.sftp_quiet import quiet_connection
from aftd.vfs.sftp_send import tune_send_path

__all__ = ["tune_connection"]

_MSG_IGNORE = 2
_EMPTY_STRING = b"\0\0\0\0"
# Ciphers for which the MSG_IGNORE before each packet (a CBC-era countermeasure) is useless.
_NO_IGNORE_NEEDED = ("-gcm@openssh.com", "chacha20-poly1305@openssh.com", "-ctr")
_KEEPALIVE_SLACK_S = 1.0


def tune_connection(conn: asyncssh.SSHClientConnection) -> None:
    """Apply every speed-up that fits this connection (call once, right after connecting)."""
    _coalesce_sends(conn)
    _skip_ignore_padding(conn)
    tune_send_path(conn)  # after the padding patch: it wraps the resulting send_packet
    _feed_whole_packets(conn)
    _throttle_keepalive_reset(conn)
    quiet_connection(conn)


def _coalesce_sends(conn: asyncssh.SSHClientConnection) -> None:
    """Batch the SSH packets produced in one loop iteration into one socket write.

    asyncssh writes every packet (16-32 KiB) to the transport separately, which costs one
    send() syscall each; on loopback those syscalls were the largest single cost of a copy.
    Order is preserved because every packet of the connection goes through this buffer.
    """
    if not fp.allowed("coalesce_sends"):
        return
    loop = asyncio.get_running_loop()
    send = getattr(conn, "_send", None)  # the one place asyncssh hands bytes to the transport
    if not callable(send):
        fp.disabled("coalesce_sends", "asyncssh connection has no _send method")
        return
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
    fp.active("coalesce_sends")


def _skip_ignore_padding(conn: asyncssh.SSHClientConnection) -> None:
    """Stop asyncssh from sending an empty MSG_IGNORE packet ahead of every packet.

    That padding defends CBC modes against chosen-plaintext attacks; with AEAD or CTR ciphers
    it buys nothing and doubles the packets to encrypt and send (about a third of the CPU of an
    upload). asyncssh inserts it through ``self.send_packet``, so an instance-level wrapper can
    drop exactly those; anything else, and any CBC cipher, is left alone.
    """
    cipher = str(conn.get_extra_info("send_cipher") or "")
    if not cipher.endswith(_NO_IGNORE_NEEDED) or not fp.allowed("skip_ignore_padding"):
        return  # a CBC cipher needs the padding: nothing to skip
    if not _inserts_ignore_packets():
        fp.disabled("skip_ignore_padding", "asyncssh no longer inserts MSG_IGNORE through "
                    "send_packet as this patch expects")
        return
    send_packet = conn.send_packet

    def without_padding(pkttype: int, *args: bytes, handler: Any = None) -> None:
        if pkttype == _MSG_IGNORE and args == (_EMPTY_STRING,):
            return
        send_packet(pkttype, *args, handler=handler)

    conn.send_packet = without_padding  # type: ignore[method-assign]
    fp.active("skip_ignore_padding")


def _inserts_ignore_packets() -> bool:
    """Self-test: asyncssh's send_packet still adds the padding packet the way we drop it."""
    import inspect

    try:
        src = inspect.getsource(asyncssh.connection.SSHConnection.send_packet)
    except (OSError, TypeError, AttributeError):
        return False
    return "self.send_packet(MSG_IGNORE, String(b''))" in src


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
    if not fp.allowed("feed_whole_packets"):
        return
    try:
        from asyncssh.encryption import GCMEncryption

        orig = conn.data_received
        want_hdr, want_rest = conn._recv_pkthdr, conn._recv_packet
        conn._inpbuf, conn._recv_handler, conn._recv_macsize  # noqa: B018 (probe)
        conn._pktlen, conn._recv_blocksize, conn._recv_encryption  # noqa: B018 (probe)
    except (ImportError, AttributeError) as exc:
        fp.disabled("feed_whole_packets", f"asyncssh internals changed: {exc}")
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
    fp.active("feed_whole_packets")


def _throttle_keepalive_reset(conn: asyncssh.SSHClientConnection) -> None:
    """Restart the keepalive timer at most once a second instead of on every received read.

    asyncssh cancels and re-creates its keepalive TimerHandle on each ``data_received``; fed one
    packet at a time that is ~32,000 timers per GiB (cancelled handles also bloat the loop's
    heap). Skipping resets within a second of the last one only lets a keepalive go out up to
    a second early on a link that went quiet, which is harmless: it is a request the server
    answers, and only unanswered ones count toward a disconnect.
    """
    if not fp.allowed("keepalive_throttle"):
        return
    try:
        reset = conn._reset_keepalive_timer
        conn._keepalive_timer  # noqa: B018 (probe)
    except AttributeError as exc:
        fp.disabled("keepalive_throttle", f"asyncssh internals changed: {exc}")
        return
    loop = asyncio.get_running_loop()
    last = -_KEEPALIVE_SLACK_S

    def throttled() -> None:
        nonlocal last
        now = loop.time()
        # No timer armed (not yet authenticated, keepalives off, just fired): always reset.
        if conn._keepalive_timer is None or now - last >= _KEEPALIVE_SLACK_S:
            last = now
            reset()

    conn._reset_keepalive_timer = throttled  # type: ignore[method-assign]
    fp.active("keepalive_throttle")
