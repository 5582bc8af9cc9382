"""One ranged GET of an object, on a thread, straight into the copy engine's local-file sink.

Why a thread and ``http.client`` rather than the event loop and aiohttp: a large download to
local disk spends most of its CPU on per-chunk work in Python (asyncio reads the socket into a
fresh 256 KiB ``bytes`` each time, aiohttp queues and joins them, the copy engine hands them
to a file thread). Here one 1 MiB buffer per range is filled by ``recv_into`` and written in
place with ``pwrite``, the GIL released for both: about 0.9 CPU seconds per GiB against 2.2
on the streaming path (README: "Parallel ranged downloads"). The request itself (URL and
headers, signed or with a token) is built by the backend on the event loop
(:meth:`~aftd.vfs.objstore.ObjectStoreVfs.blocking_get`), so no credential work runs here.

A backend's :class:`HttpGet` says how to read the answer's headers (:class:`Answer`: the
object's size, version and stored mtime) and which statuses are errors; a connection that
fails or stalls is a :class:`~aftd.vfs.base.TransientError` for the caller to retry from the
last byte the sink took. :func:`fetch` can be aborted from another thread (a cancelled copy).
"""

from __future__ import annotations

import asyncio
import functools
import http.client
import socket
import ssl
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from email.message import Message
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

from aftd.vfs.base import ReadPin

__all__ = ["BUFFER", "CONNECTION_ERRORS", "POOL", "Abort", "Answer", "HttpGet", "fetch",
           "range_honoured", "read_range", "via_proxy"]

BUFFER = 1 << 20  # bytes per sink call (one reused buffer per range)
_ERROR_BODY = 64 << 10  # at most this much of an error answer is read for its message
# Threads for ranged GETs: each holds one range for its whole duration, so they are not the
# file_io pool's (whose threads must stay free for short local calls).
POOL = ThreadPoolExecutor(max_workers=64, thread_name_prefix="aftd-objget")
_PINNING = threading.Lock()  # answers of several ranges may arrive at once


@dataclass(frozen=True)
class Answer:
    """What a ranged GET's headers say of the whole object."""

    size: int
    version: str | None
    mtime: float | None


@dataclass(frozen=True)
class HttpGet:
    """A ready request: ``url`` and ``headers`` (signed or with a token by the backend), how
    to connect, and ``answer(status, headers, error_body)``, which returns the
    :class:`Answer` of a 200/206 or raises the backend's error for any other status
    (``error_body`` is then the start of the answer's body)."""

    url: str
    headers: dict[str, str]
    answer: Callable[[int, Message, bytes], Answer]
    context: ssl.SSLContext | None = None
    connect_timeout_s: float = 15.0
    read_timeout_s: float = 120.0


@dataclass
class Abort:
    """Lets another thread cut a GET that is under way (shuts its socket down)."""

    stopped: bool = False
    sock: socket.socket | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self) -> None:
        with self.lock:
            self.stopped = True
            if self.sock is not None:
                with suppress(OSError):
                    self.sock.shutdown(socket.SHUT_RDWR)

    def attach(self, sock: socket.socket | None) -> None:
        with self.lock:
            self.sock = sock
            if self.stopped and sock is not None:
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


# What a broken or stalled connection raises here (worth another GET).
CONNECTION_ERRORS = (OSError, http.client.HTTPException)


async def read_range(get: HttpGet, start: int, end: int,
                     sink: Callable[[int, memoryview], None], pin: ReadPin,
                     changed: Callable[[str], Exception]) -> int:
    """:func:`fetch` on a :data:`POOL` thread, the answer checked against ``pin`` (the first
    answer sets it; a later one for another version or size raises ``changed(reason)``). A
    cancel aborts the GET and waits until the thread has left the sink."""

    def opened(answer: Answer) -> None:
        with _PINNING:
            if pin.size is None:
                pin.version, pin.mtime, pin.size = answer.version, answer.mtime, answer.size
            elif pin.version is not None and answer.version is not None \
                    and answer.version != pin.version:  # a server that ignored the condition
                raise changed("the object changed while it was read")
            elif answer.size != pin.size:
                raise changed(f"the object's size changed while it was read ({pin.size} "
                              f"bytes, now {answer.size})")
        pin.learned()

    abort = Abort()
    fut = asyncio.get_running_loop().run_in_executor(
        POOL, functools.partial(fetch, get, start, end, sink, abort, opened))
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        abort()
        await asyncio.wait({fut})
        if not fut.cancelled():
            fut.exception()  # what the aborted GET raised is moot: the read was cancelled
        raise


def fetch(get: HttpGet, start: int, end: int, sink: Callable[[int, memoryview], None],
          abort: Abort, opened: Callable[[Answer], None]) -> int:
    """GET bytes ``[start, end)`` and hand them to ``sink(position, chunk)`` in order;
    ``opened`` sees the answer before the first byte (it raises to refuse it). Returns the
    position after the last byte received (``end`` unless the body ended early)."""
    conn = _connection(get)
    try:
        conn.connect()
        abort.attach(conn.sock)
        if abort.stopped:
            raise ConnectionAbortedError("the read was cancelled")
        conn.sock.settimeout(get.read_timeout_s)
        conn.request("GET", _target(get.url), headers=get.headers)
        resp = conn.getresponse()
        body = b"" if resp.status in (200, 206) else resp.read(_ERROR_BODY)
        opened(get.answer(resp.status, resp.msg, body))
        return _receive(resp, start, end, sink)
    finally:
        abort.attach(None)
        conn.close()


def _receive(resp: http.client.HTTPResponse, start: int, end: int,
             sink: Callable[[int, memoryview], None]) -> int:
    view = memoryview(bytearray(BUFFER))
    pos = start
    while pos < end:
        n = resp.readinto(view[:min(BUFFER, end - pos)])
        if not n:
            if resp.length:  # the connection ended before the body did
                raise http.client.IncompleteRead(b"", resp.length)
            break
        sink(pos, view[:n])
        pos += n
    return pos


def range_honoured(status: int, content_range: str | None, start: int) -> bool:
    """Whether an answer holds the bytes from ``start``: a 206, or a 200 whose Content-Range
    starts there (``rclone serve s3`` answers ranges so), or any 200 from 0."""
    if status == 206 or not start:
        return True
    first = (content_range or "").removeprefix("bytes ").partition("-")[0]
    return first.isdigit() and int(first) == start


def via_proxy(url: str) -> bool:
    """Whether the environment's proxy settings (``HTTPS_PROXY``, ``NO_PROXY``...) send
    requests for ``url`` through a proxy, as the SDKs' own requests go; these GETs connect
    directly, so such a backend streams instead."""
    parts = urlsplit(url)
    return bool(getproxies().get(parts.scheme)) and not proxy_bypass(parts.hostname or "")


def _connection(get: HttpGet) -> http.client.HTTPConnection:
    url = urlsplit(get.url)
    host = url.hostname or ""
    if url.scheme == "https":
        return http.client.HTTPSConnection(host, url.port, timeout=get.connect_timeout_s,
                                           context=get.context or ssl.create_default_context())
    return http.client.HTTPConnection(host, url.port, timeout=get.connect_timeout_s)


def _target(url: str) -> str:
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
