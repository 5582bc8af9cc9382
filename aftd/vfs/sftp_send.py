"""Instance-level fast path for sending SFTP writes over AES-GCM (the upload direction).

asyncssh copies each uploaded byte about fifteen times on the way out: ``String(data)`` and two
joins build the FXP_WRITE request, the channel copies it into a ``bytearray``, slices every
32 KiB packet out of it, ``String()``-wraps and joins it twice more, then the connection adds
padding by concatenation, encrypts, and splits and rejoins header, ciphertext and tag. Here:

* the FXP_WRITE request is built once into the channel's send buffer (header + data, one copy);
* the channel sends each packet from a memoryview of that buffer (no slice, no ``String``);
* the connection builds the padded plaintext with one join and encrypts it with one cached
  ``AESGCM`` object per key (a re-key installs a new cipher object, which refreshes the cache).

The bytes on the wire are the same as asyncssh's: same packet boundaries, same framing, same
padding rule. Like :mod:`aftd.vfs.sftp_speed`, every patch replaces a method on one object, checks
the internals it relies on first, and anything outside the fast case (key exchange in progress,
re-key due, compression, packet logging, other ciphers) goes through asyncssh's own code.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import asyncssh

from aftd.vfs import sftp_fastpath as fp

__all__ = ["check_gcm_send", "check_sftp_write", "tune_send_path", "tune_sftp_writes"]
_MSG_CHANNEL_DATA = 94
_FXP_WRITE = 6
_CONN_ATTRS = ("_send_encryption", "_compressor", "_auth_complete", "_kex_complete",
               "_rekey_bytes_sent", "_rekey_bytes", "_rekey_seconds", "_rekey_time",
               "_send_seq", "_send_enchdrlen", "_send_blocksize", "_send", "logger")
_CHAN_ATTRS = ("_send_buf", "_send_buf_len", "_send_window", "_send_pktsize", "_send_chan",
               "_send_state", "_conn", "_flush_send_buf", "_pause_resume_writing")
# The marker an instance gets once its send path is patched: (ready predicate, send function).
_FAST_ATTR = "_aftd_fast_send"


def _debug_packets(obj: Any) -> bool:
    """asyncssh logs packet contents at debug level 3; keep its own code path for that."""
    return int(getattr(obj.logger, "_debug_level", 0)) >= 3


def tune_send_path(conn: asyncssh.SSHClientConnection) -> None:
    """Encrypt outgoing channel data packets with one join and a cached AES-GCM object.

    Installed only after :func:`check_gcm_send` showed, on this connection and its negotiated
    cipher, that a packet sent this way decrypts to exactly what asyncssh's own code sends.
    """
    if not str(conn.get_extra_info("send_cipher") or "").endswith("-gcm@openssh.com"):
        return  # another cipher: this patch does not apply (nothing to report)
    if not fp.allowed("gcm_send"):
        return
    try:
        from asyncssh.crypto.cipher import GCMCipher
        from asyncssh.encryption import GCMEncryption
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        for attr in _CONN_ATTRS:
            getattr(conn, attr)
        GCMCipher._update_iv  # noqa: B018 (probe)
    except (ImportError, AttributeError) as exc:
        fp.disabled("gcm_send", f"asyncssh internals changed: {exc}")
        return
    orig_send_packet = conn.send_packet
    cache: list[Any] = [None, None]  # [GCMCipher it was made for, AESGCM]

    def aead() -> tuple[Any, Any] | None:
        """The current send cipher and its AESGCM, or None outside the fast case."""
        enc = conn._send_encryption
        if type(enc) is not GCMEncryption:
            return None
        cipher = enc._cipher
        if cipher is not cache[0]:
            key = getattr(cipher, "_key", None)
            if not isinstance(key, bytes) or not isinstance(getattr(cipher, "_iv", None), bytes):
                return None
            cache[0], cache[1] = cipher, AESGCM(key)
        return cipher, cache[1]

    def ready() -> bool:
        """True when asyncssh's send_packet would send a data packet straight away."""
        return bool(conn._auth_complete and conn._kex_complete and not conn._compressor
                    and conn._rekey_bytes_sent < conn._rekey_bytes
                    and not (conn._rekey_seconds and time.monotonic() >= conn._rekey_time)
                    and not _debug_packets(conn) and aead() is not None)

    def send_data(*args: Any) -> None:
        """One MSG_CHANNEL_DATA packet from parts (bytes-likes); caller checked ``ready()``."""
        cipher, gcm = aead()  # type: ignore[misc]
        size = 1 + sum(len(a) for a in args)
        padlen = -(conn._send_enchdrlen + size) % conn._send_blocksize
        if padlen < 4:
            padlen += conn._send_blocksize
        plain = b"".join((bytes((padlen, _MSG_CHANNEL_DATA)), *args, os.urandom(padlen)))
        pktlen = len(plain)
        hdr = pktlen.to_bytes(4, "big")
        sealed = gcm.encrypt(cipher._iv, plain, hdr)  # ciphertext + 16-byte tag
        cipher._update_iv()
        conn._send(hdr)  # the coalescing patch (sftp_speed) joins these into one write
        conn._send(sealed)
        conn._send_seq = (conn._send_seq + 1) & 0xFFFFFFFF
        conn._rekey_bytes_sent += pktlen

    def send_packet(pkttype: int, *args: Any, handler: Any = None) -> None:
        if pkttype == _MSG_CHANNEL_DATA and ready():
            send_data(*args)
        else:
            orig_send_packet(pkttype, *args, handler=handler)

    problem = check_gcm_send(conn, orig_send_packet, send_data) if ready() else (
        "the connection was not ready for a self-test")
    if problem:
        fp.disabled("gcm_send", f"self-test failed: {problem}")
        return
    conn.send_packet = send_packet  # type: ignore[method-assign]
    setattr(conn, _FAST_ATTR, (ready, send_data))
    fp.active("gcm_send")


def check_gcm_send(conn: Any, own: Callable[..., None], fast: Callable[..., None]) -> str:
    """Self-test: send one channel data packet through asyncssh's own ``send_packet`` (``own``)
    and through ``fast``, capture both instead of sending them, and decrypt them with the
    connection's key. They must hold the same packets (length, padding length, payload; the
    padding bytes are random by design) and advance the sequence number and re-key counter
    alike. Returns what differs, or "" when they match. Nothing reaches the wire: the cipher
    state is restored afterwards, so the captured ciphertexts are thrown away unused.
    """
    cipher = conn._send_encryption._cipher
    key, iv = cipher._key, cipher._iv
    saved = (iv, conn._send_seq, conn._rekey_bytes_sent, conn.__dict__.get("_send"))
    parts = ((7).to_bytes(4, "big"), (13).to_bytes(4, "big"), b"aftd self-test")
    runs: list[tuple[bytes, int, int]] = []

    def fast_packet(_pkttype: int, *args: bytes) -> None:
        fast(*args)

    paths: tuple[Callable[..., None], ...] = (own, fast_packet)
    try:
        for path in paths:
            cipher._iv, conn._send_seq, conn._rekey_bytes_sent = saved[:3]
            sent: list[bytes] = []
            conn._send = lambda data, sent=sent: sent.append(bytes(data))
            path(_MSG_CHANNEL_DATA, *parts)
            runs.append((b"".join(sent), conn._send_seq - saved[1],
                         conn._rekey_bytes_sent - saved[2]))
    except Exception as exc:  # any failure means: do not use the fast path
        return f"{type(exc).__name__}: {exc}"
    finally:
        cipher._iv, conn._send_seq, conn._rekey_bytes_sent = saved[:3]
        if saved[3] is None:
            conn.__dict__.pop("_send", None)
        else:
            conn._send = saved[3]
    return _compare_gcm(runs, key, iv)


def _compare_gcm(runs: list[tuple[bytes, int, int]], key: bytes, iv: bytes) -> str:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    opened = []
    for stream, seq_step, rekey_step in runs:
        try:
            opened.append((_open_gcm_packets(AESGCM(key), iv, stream), seq_step, rekey_step))
        except (InvalidTag, ValueError) as exc:
            return f"a packet does not decrypt ({type(exc).__name__})"
    own, fast = opened
    if own[0] != fast[0]:
        return f"packets differ: asyncssh sent {own[0]!r}, the fast path {fast[0]!r}"
    if own[1:] != fast[1:]:
        return f"counters differ: asyncssh advanced {own[1:]}, the fast path {fast[1:]}"
    return ""


def _open_gcm_packets(gcm: Any, iv: bytes, stream: bytes) -> list[tuple[int, int, bytes]]:
    """(packet length, padding length, payload) of each AES-GCM packet in ``stream``."""
    out, off = [], 0
    while off < len(stream):
        hdr = stream[off:off + 4]
        n = int.from_bytes(hdr, "big")
        plain = gcm.decrypt(iv, stream[off + 4:off + 4 + n + 16], hdr)
        padlen = plain[0]
        out.append((n, padlen, plain[1:len(plain) - padlen]))
        off += 4 + n + 16
        iv = iv[:4] + ((int.from_bytes(iv[4:], "big") + 1) % (1 << 64)).to_bytes(8, "big")
    return out


def tune_sftp_writes(sftp: asyncssh.SFTPClient) -> None:
    """Send FXP_WRITE requests with one copy of the data into the channel's send buffer.

    Needs the GCM send path on the connection (it sends the packets from the buffer), and is
    installed only after :func:`check_sftp_write` showed it builds asyncssh's exact requests.
    """
    try:
        handler: Any = sftp._handler  # internals: typed loosely on purpose
        writer = handler._writer
        chan = writer.channel
        fast: tuple[Callable[[], bool], Callable[..., None]] | None = getattr(
            chan._conn, _FAST_ATTR, None)
    except AttributeError as exc:
        if fp.allowed("sftp_write"):
            fp.disabled("sftp_write", f"asyncssh internals changed: {exc}")
        return
    if not fp.allowed("sftp_write") or fast is None:
        return  # no GCM fast path on this connection (reported there): nothing to build on
    try:
        for attr in _CHAN_ATTRS:
            getattr(chan, attr)
        orig_send_packet = handler.send_packet
        handler._make_request  # noqa: B018 (probe)
    except AttributeError as exc:
        fp.disabled("sftp_write", f"asyncssh internals changed: {exc}")
        return
    ready, send_data = fast

    async def write(handle: bytes, offset: int, data: bytes) -> int:
        # Same bytes as asyncssh's String(data), without copying data to prefix its length.
        return await handler._make_request(  # type: ignore[no-any-return]
            _FXP_WRITE, len(handle).to_bytes(4, "big") + handle, offset.to_bytes(8, "big"),
            len(data).to_bytes(4, "big"), data)

    def send_packet(pkttype: int, pktid: int | None, *args: bytes) -> None:
        if pkttype != _FXP_WRITE or handler._writer is not writer or chan._send_state != "open" \
                or _debug_packets(handler):
            orig_send_packet(pkttype, pktid, *args)
            return
        buf = _request(pkttype, args)
        # What SSHChannel.write does, minus its copy of the buffer.
        chan._send_buf.append((buf, None))
        chan._send_buf_len += len(buf)
        chan._flush_send_buf()

    def flush_send_buf() -> None:
        """asyncssh's _flush_send_buf, sending each packet from a view of the buffer."""
        if chan._send_chan is None or not ready():
            orig_flush()
            return
        chan_id = chan._send_chan.to_bytes(4, "big")
        sent = False
        while chan._send_buf and chan._send_window:
            buf, datatype = chan._send_buf[0]
            if datatype is not None or not ready():
                break  # extended data or a re-key starting: asyncssh's loop finishes the job
            n = min(chan._send_window, chan._send_pktsize, len(buf))
            with memoryview(buf) as view, view[:n] as part:
                send_data(chan_id, n.to_bytes(4, "big"), part)
            if n == len(buf):
                del chan._send_buf[0]
            else:
                del buf[:n]  # cheap: bytearray drops a prefix by moving its start
            chan._send_buf_len -= n
            chan._send_window -= n
            sent = True
        if sent:
            chan._pause_resume_writing()
        orig_flush()  # anything left (or nothing); also sends a pending EOF/close

    problem = check_sftp_write(handler, write)
    if problem:
        fp.disabled("sftp_write", f"self-test failed: {problem}")
        return
    orig_flush = chan._flush_send_buf
    handler.write = write
    handler.send_packet = send_packet
    chan._flush_send_buf = flush_send_buf
    fp.active("sftp_write")


def _request(pkttype: int, args: tuple[bytes, ...]) -> bytearray:
    """An SFTP request (length, type, fields) built with one copy of each field."""
    size = 1 + sum(len(a) for a in args)
    buf = bytearray(size.to_bytes(4, "big"))
    buf.append(pkttype)
    for a in args:  # the one copy of the data on its way into the channel
        buf += a
    return buf


class _Capture:
    """Stands in for the SFTP session's writer during a self-test: keeps what is written."""

    def __init__(self, channel: Any) -> None:
        self.channel, self.data = channel, b""

    def write(self, data: bytes) -> None:
        self.data += bytes(data)


def check_sftp_write(handler: Any, fast_write: Callable[..., Any]) -> str:
    """Self-test: the request fields our ``write`` makes, and the bytes :func:`_request` frames
    them into, equal what asyncssh's own ``write`` and ``send_packet`` produce for the same
    write. Runs both with the request capture in place of sending; returns what differs."""
    cls = type(handler)
    fields: list[tuple[Any, bytes]] = []

    async def capture(pkttype: Any, *args: bytes) -> int:
        fields.append((pkttype, b"".join(bytes(a) for a in args)))
        return 0

    had = "_make_request" in handler.__dict__
    saved = handler.__dict__.get("_make_request")
    args = (b"aftd-handle-7", 0x1_0000_0001, b"aftd self-test" * 3)
    try:
        handler._make_request = capture
        for call in (cls.write(handler, *args), fast_write(*args)):
            try:
                call.send(None)
            except StopIteration:
                continue
            call.close()
            return "a write did not complete at once against the capture"
    except Exception as exc:  # any failure means: do not use the fast path
        return f"{type(exc).__name__}: {exc}"
    finally:
        if had:
            handler._make_request = saved
        else:
            handler.__dict__.pop("_make_request", None)
    if len(fields) != 2 or fields[0] != fields[1]:
        return f"write requests differ: asyncssh {fields[:1]!r}, fast path {fields[1:]!r}"
    return _check_framing(handler, fields[0][1])


def _check_framing(handler: Any, body: bytes) -> str:
    writer = handler._writer
    capture = _Capture(writer.channel)
    try:
        handler._writer = capture
        type(handler).send_packet(handler, _FXP_WRITE, 1, body)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        handler._writer = writer
    ours = bytes(_request(_FXP_WRITE, (body,)))
    if capture.data != ours:
        return "request framing differs from asyncssh's"
    return ""
