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
import structlog

__all__ = ["tune_send_path", "tune_sftp_writes"]

log = structlog.get_logger(__name__)
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
    """Encrypt outgoing channel data packets with one join and a cached AES-GCM object."""
    try:
        from asyncssh.crypto.cipher import GCMCipher
        from asyncssh.encryption import GCMEncryption
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        for attr in _CONN_ATTRS:
            getattr(conn, attr)
        GCMCipher._update_iv  # noqa: B018 (probe)
    except (ImportError, AttributeError):
        log.info("asyncssh_tuning_skipped", patch="gcm_send")
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

    conn.send_packet = send_packet  # type: ignore[method-assign]
    setattr(conn, _FAST_ATTR, (ready, send_data))


def tune_sftp_writes(sftp: asyncssh.SFTPClient) -> None:
    """Send FXP_WRITE requests with one copy of the data into the channel's send buffer."""
    try:
        handler: Any = sftp._handler  # internals: typed loosely on purpose
        writer = handler._writer
        chan = writer.channel
        for attr in _CHAN_ATTRS:
            getattr(chan, attr)
        orig_send_packet = handler.send_packet
        handler._make_request  # noqa: B018 (probe)
        fast: tuple[Callable[[], bool], Callable[..., None]] = getattr(chan._conn, _FAST_ATTR)
    except AttributeError:
        log.info("asyncssh_tuning_skipped", patch="sftp_write")
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
        size = 1 + sum(len(a) for a in args)
        buf = bytearray(size.to_bytes(4, "big"))
        buf.append(pkttype)
        for a in args:  # the one copy of the data on its way into the channel
            buf += a
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

    orig_flush = chan._flush_send_buf
    handler.write = write
    handler.send_packet = send_packet
    chan._flush_send_buf = flush_send_buf
