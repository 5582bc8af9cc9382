"""A TLS data connection that moves bytes in large batches (FTPS ``RETR``/``STOR``/listings).

Why not ``ssl.SSLSocket``: OpenSSL reads a TLS record (at most 16 KiB) with two ``read``
system calls, its header and then its body, and writes one record per ``send``; a GiB is then
some 130,000 system calls, each also waking the peer. Here the TLS object works on memory
buffers (:class:`ssl.MemoryBIO`, ``SSLContext.wrap_bio``: public API, and it takes
``session=`` like ``wrap_socket``, so the data connection resumes the control connection's
TLS session as vsftpd's ``require_ssl_reuse`` demands). The socket is read in blocks of up to
:data:`RECV_BLOCK` and every whole record in them is decrypted before the next read; a write
encrypts up to :data:`SEND_BLOCK` of records and sends them at once.

Semantics kept from ``SSLSocket`` (with ``suppress_ragged_eofs``, as ``ftplib`` uses it): a
connection closed without a TLS close_notify reads as the end of the data; the transfer's
final reply and the copy's size check tell a cut transfer from a complete one.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from contextlib import suppress
from typing import Any, TypeVar

__all__ = ["RECV_BLOCK", "SEND_BLOCK", "TlsDataChannel"]

T = TypeVar("T")
RECV_BLOCK = 256 << 10  # bytes asked of the socket per read (what it holds arrives at once)
SEND_BLOCK = 256 << 10  # plaintext encrypted per send (about 16 records)


class TlsDataChannel:
    """TLS over a connected, blocking (or timeout) socket through memory buffers; one thread
    at a time, except :meth:`abort` (any thread)."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, server_hostname: str,
                 session: ssl.SSLSession | None) -> None:
        self.raw = sock
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._in, self._out, server_hostname=server_hostname,
                                     session=session)
        self._buf = bytearray(RECV_BLOCK)
        self._view = memoryview(self._buf)
        self._eof = False

    # -- the handshake and what it learned ----------------------------------------------------
    def do_handshake(self) -> None:
        self._run(self._tls.do_handshake)

    @property
    def session_reused(self) -> bool:
        return self._tls.session_reused

    def getpeercert(self, binary_form: bool = False) -> Any:
        return self._tls.getpeercert(binary_form)

    def cipher(self) -> tuple[str, str, int] | None:
        return self._tls.cipher()

    def version(self) -> str | None:
        return self._tls.version()

    # -- data ---------------------------------------------------------------------------------
    def recv_into(self, view: memoryview | bytearray, nbytes: int = 0) -> int:
        """Up to ``nbytes`` (default: all of ``view``) decrypted bytes: every whole record
        already received, else at least one after reading the socket; 0 at the end."""
        out = memoryview(view).cast("B")
        want = min(nbytes, len(out)) if nbytes else len(out)
        got = 0
        read: Callable[[int, memoryview], int] = self._tls.read  # type: ignore[assignment]
        while got < want:
            try:
                n = read(want - got, out[got:])
            except ssl.SSLWantReadError:
                if got or not self._fill():
                    break
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                self._eof = True  # close_notify, or a ragged close (see the module doc)
                break
            if n == 0:  # the server's close_notify (ssl reports it as 0 bytes)
                self._eof = True
                break
            got += n
        return got

    def recv(self, bufsize: int) -> bytes:
        buf = bytearray(bufsize)
        n = self.recv_into(buf)
        return bytes(buf[:n])

    def sendall(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        pos = 0
        while pos < len(view):
            pos += self._run(self._tls.write, view[pos:pos + SEND_BLOCK])

    def unwrap(self) -> None:
        """Send our close_notify and wait for the server's (a clean end of an upload)."""
        self._run(self._tls.unwrap)

    # -- the socket ---------------------------------------------------------------------------
    def abort(self) -> None:
        """From another thread: make a blocked read or write fail at once."""
        with suppress(OSError):
            self.raw.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.raw.close()

    def _fill(self) -> bool:
        """Read what the socket holds into the TLS input; False at its end."""
        if self._eof:
            return False
        if self._out.pending:  # e.g. a key update the server asked for
            self._flush()
        n = self.raw.recv_into(self._view)
        if n == 0:
            self._eof = True
            self._in.write_eof()
            return True  # the TLS object now reports how the stream ended
        self._in.write(self._view[:n])
        return True

    def _flush(self) -> None:
        if self._out.pending:
            self.raw.sendall(self._out.read())

    def _run(self, step: Callable[..., T], *args: object) -> T:
        """A TLS step, feeding it from the socket until it completes."""
        while True:
            try:
                result = step(*args)
            except ssl.SSLWantReadError:
                self._flush()
                if not self._fill():
                    raise ssl.SSLEOFError(ssl.SSL_ERROR_EOF,
                                          "the data connection closed mid-handshake") from None
                continue
            self._flush()
            return result
