"""The FTPS data connection that decrypts and encrypts in large batches (aftd.vfs.ftp_tls)
against a real TLS peer (OpenSSL through the standard library's server side, on loopback), and
the hand-over of chunks between a transfer's thread and the event loop (aftd.vfs.ftp_stream).

The transfers against real FTP servers (vsftpd with session reuse required, pyftpdlib) are in
test_ftp.py, test_ftp_transfers.py and the conformance suite; these cover what those cannot
steer: record boundaries at every offset, a server that closes without close_notify, and an
abort mid-chunk.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path

import pytest

from aftd.vfs.ftp_ops import recv_fill
from aftd.vfs.ftp_stream import _Inbox
from aftd.vfs.ftp_tls import RECV_BLOCK, SEND_BLOCK, TlsDataChannel
from tests.fixtures.tlscert import TestCert, make_cert

DEADLINE_S = 60.0  # generous: a loaded 2-core machine


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> TestCert:
    return make_cert(tmp_path_factory.mktemp("tls"), "peer")


class Peer:
    """One TLS server connection on a thread, running ``serve(tls_socket)``."""

    def __init__(self, cert: TestCert, serve: Callable[[ssl.SSLSocket], None]) -> None:
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert.cert, cert.key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(serve,), daemon=True)
        self.thread.start()

    def _run(self, serve: Callable[[ssl.SSLSocket], None]) -> None:
        try:
            raw, _ = self.listener.accept()
            raw.settimeout(DEADLINE_S)
            with self.ctx.wrap_socket(raw, server_side=True) as tls:
                serve(tls)
        except BaseException as exc:  # reported by join()
            self.error = exc

    def join(self) -> None:
        self.thread.join(DEADLINE_S)
        assert not self.thread.is_alive(), "the TLS peer did not finish"
        self.listener.close()
        if self.error is not None:
            raise self.error


def close_notify(tls: ssl.SSLSocket) -> None:
    """Send a close_notify; the client may close its socket rather than answer (as ftplib's
    downloads do), which ``unwrap`` then reports."""
    with suppress(ssl.SSLError, OSError):
        tls.unwrap()


def client(cert: TestCert, port: int) -> TlsDataChannel:
    ctx = ssl.create_default_context(cafile=str(cert.cert))
    raw = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S)
    chan = TlsDataChannel(raw, ctx, "127.0.0.1", None)
    chan.do_handshake()
    return chan


def payload(size: int) -> bytes:
    """Bytes whose every position differs from its neighbours' (a shifted or repeated record
    shows)."""
    out = bytearray()
    i = 0
    while len(out) < size:
        out += hashlib.sha256(i.to_bytes(8, "big")).digest()
        i += 1
    return bytes(out[:size])


# Writes the peer makes: records of every size around the 16 KiB record limit, single bytes,
# and a block larger than one socket read, so records straddle each read of the socket.
WRITES = [1, 16383, 16384, 16385, 7, 3 * RECV_BLOCK + 5, 1, 40000, 65536, 123457]


@pytest.mark.parametrize("view_size", [1000, 16384, 16385, 1 << 20])
def test_large_reads_deliver_identical_bytes_across_record_boundaries(
        cert: TestCert, view_size: int) -> None:
    data = payload(sum(WRITES))

    def serve(tls: ssl.SSLSocket) -> None:
        pos = 0
        for n in WRITES:
            tls.sendall(data[pos:pos + n])
            pos += n
        close_notify(tls)

    peer = Peer(cert, serve)
    chan = client(cert, peer.port)
    got = bytearray()
    view = memoryview(bytearray(view_size))
    while n := recv_fill(chan, view):
        got += view[:n]
        if n < view_size:
            break
    assert recv_fill(chan, view) == 0  # the end stays the end
    chan.close()
    peer.join()
    assert len(got) == len(data)
    assert bytes(got) == data


def test_recv_into_returns_what_arrived_without_waiting_for_a_full_view(cert: TestCert) -> None:
    """A read returns the records at hand (a listing's short reply must not wait for more)."""
    released = threading.Event()

    def serve(tls: ssl.SSLSocket) -> None:
        tls.sendall(b"first")
        released.wait(DEADLINE_S)
        tls.sendall(b"second")
        close_notify(tls)

    peer = Peer(cert, serve)
    chan = client(cert, peer.port)
    buf = bytearray(1 << 20)
    n = chan.recv_into(buf)
    assert bytes(buf[:n]) == b"first"
    released.set()
    rest = b""
    while chunk := chan.recv(1 << 16):
        rest += chunk
    assert rest == b"second"
    chan.close()
    peer.join()


def test_a_close_without_close_notify_reads_as_the_end(cert: TestCert) -> None:
    """As ``SSLSocket`` with ftplib's ``suppress_ragged_eofs``: the transfer's final reply and
    the size check decide whether a cut transfer was complete."""
    def serve(tls: ssl.SSLSocket) -> None:
        tls.sendall(b"x" * 50000)
        socket.socket.shutdown(tls, socket.SHUT_RDWR)  # no close_notify

    peer = Peer(cert, serve)
    chan = client(cert, peer.port)
    view = memoryview(bytearray(1 << 20))
    assert recv_fill(chan, view) == 50000
    chan.close()
    peer.join()


def test_sendall_in_batches_arrives_whole_and_unwrap_closes_cleanly(cert: TestCert) -> None:
    data = payload(5 * SEND_BLOCK + 12345)
    received: list[bytes] = []

    def serve(tls: ssl.SSLSocket) -> None:
        got = bytearray()
        while chunk := tls.recv(1 << 16):  # b"" only on the client's close_notify
            got += chunk
        received.append(bytes(got))
        tls.unwrap()  # answers the client's close_notify

    peer = Peer(cert, serve)
    chan = client(cert, peer.port)
    chan.sendall(data[:100])
    chan.sendall(memoryview(data)[100:])
    chan.unwrap()
    chan.close()
    peer.join()
    assert received == [data]


def test_abort_from_another_thread_ends_a_blocked_read_mid_chunk(cert: TestCert) -> None:
    """A cancelled download: the server has sent part of a chunk and then nothing more; the
    reading thread must return at once when the transfer is aborted."""
    hold, sent = threading.Event(), threading.Event()

    def serve(tls: ssl.SSLSocket) -> None:
        tls.sendall(b"y" * 100000)
        sent.set()
        hold.wait(DEADLINE_S)

    peer = Peer(cert, serve)
    chan = client(cert, peer.port)
    result: list[object] = []

    def read() -> None:
        try:
            result.append(recv_fill(chan, memoryview(bytearray(1 << 20))))
        except OSError as exc:
            result.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert sent.wait(DEADLINE_S)
    time.sleep(0.2)  # most likely the reader now waits for the rest of its chunk; either way
    chan.abort()     # (before or during its read) it must return
    reader.join(DEADLINE_S)
    assert not reader.is_alive(), "the aborted read did not return"
    assert result and (isinstance(result[0], OSError) or result[0] <= 100000)
    hold.set()
    chan.close()
    peer.join()


def test_a_certificate_the_context_does_not_trust_fails_the_handshake(
        cert: TestCert, tmp_path: Path) -> None:
    other = make_cert(tmp_path, "other")
    peer = Peer(cert, lambda tls: None)
    ctx = ssl.create_default_context(cafile=str(other.cert))
    raw = socket.create_connection(("127.0.0.1", peer.port), timeout=DEADLINE_S)
    chan = TlsDataChannel(raw, ctx, "127.0.0.1", None)
    with pytest.raises(ssl.SSLCertVerificationError):
        chan.do_handshake()
    chan.close()
    peer.thread.join(DEADLINE_S)
    peer.listener.close()


# -- the hand-over from a transfer's thread to the loop --------------------------------------
@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


def test_inbox_delivers_in_order_whether_or_not_the_loop_waits(
        loop: asyncio.AbstractEventLoop) -> None:
    """Chunks queued while the loop is busy need no wake-up; those that arrive while it waits
    do. Either way every chunk arrives, in order, and the thread never has more than the depth
    unread."""
    chunks = [bytes([i]) * (i + 1) for i in range(200)]

    async def consume() -> list[bytes]:
        inbox = _Inbox(asyncio.get_running_loop(), 4)

        def produce() -> None:
            for c in chunks:
                assert inbox.put(c)
            inbox.put_final(b"")

        t = threading.Thread(target=produce, daemon=True)
        t.start()
        out: list[bytes] = []
        while True:
            item = await inbox.get()
            assert isinstance(item, bytes)
            if not item:
                break
            out.append(item)
            if len(out) % 3 == 0:
                time.sleep(0.002)  # busy: the thread queues without waking the loop
            elif len(out) % 7 == 0:
                await asyncio.sleep(0.01)  # waiting: the next chunk must wake it
        t.join(DEADLINE_S)
        return out

    assert loop.run_until_complete(asyncio.wait_for(consume(), DEADLINE_S)) == chunks


def test_inbox_thread_gives_up_when_the_reader_closes(loop: asyncio.AbstractEventLoop) -> None:
    async def run() -> bool:
        inbox = _Inbox(asyncio.get_running_loop(), 1)
        assert inbox.put(b"a")  # fills the room
        answer: list[bool] = []
        t = threading.Thread(target=lambda: answer.append(inbox.put(b"b")), daemon=True)
        t.start()
        inbox.close()
        await asyncio.get_running_loop().run_in_executor(None, t.join, DEADLINE_S)
        return answer == [False]

    assert loop.run_until_complete(run())
