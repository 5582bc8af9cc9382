"""The HTTPS listener: our own accept loop, a cap on connections, TLS, and aiohttp behind it.

aiohttp's sites accept every connection the kernel hands over. Here each listening socket has an
accept loop that refuses a connection (closes it at once, with a reset) while
``max_connections`` are open, counting connections still in their TLS handshake; the handshake
has ``header_timeout_s`` to finish. Accepted connections go to aiohttp's request handler
(``web.RequestHandler``, a public class) through ``loop.connect_accepted_socket``, wrapped in a
:class:`~aftd.api.connections.GuardedProtocol` for the idle and slow-client deadlines.

aiohttp answers a request it cannot parse (a bad request line, a malformed Content-Length,
a header line too long) before any middleware runs, as plain text, logging the parser's
exception. :class:`JsonErrorRequestHandler` overrides ``RequestHandler.handle_error`` so those
answers carry the API's JSON error body and are logged as one line without the request's bytes
(they may contain an API key). That method is public but not documented as an extension point:
:func:`_self_test` checks its signature at start-up and, if aiohttp changed it, the daemon logs
``http_error_handler_fallback`` and uses aiohttp's stock handler (plain-text parse errors).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import inspect
import os
import resource
import socket
import ssl
import struct
import time
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import web

from aftd.api.connections import ConnectionTracker, GuardedProtocol, Timeouts
from aftd.api.errors import error_response
from aftd.api.state import CONNECTIONS
from aftd.serverconfig import ServerConfig

__all__ = ["ApiServer", "JsonErrorRequestHandler"]

log = structlog.get_logger("aftd.api")

_ACCEPT_BACKOFF_S = 1.0
_REFUSED_LOG_INTERVAL_S = 10.0
# Give the allocator freed memory back once this many connections closed since the last trim
# and none are left: TLS buffers are freed in pieces glibc otherwise keeps for reuse.
_TRIM_AFTER_CLOSED = 64
_TRIM_DELAY_S = 1.0
_FD_HEADROOM = 512


class JsonErrorRequestHandler(web.RequestHandler):
    """aiohttp's per-connection handler, with parse errors answered as JSON (see module doc)."""

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        reason = _first_line(message or (str(exc) if exc is not None else "") or "bad request")
        level = log.warning if status >= 500 else log.info
        level("http_request_rejected", status=status, reason=reason,
              error_type=type(exc).__name__ if exc is not None else None,
              remote=request.remote)
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send an error")
        code = "bad_http_request" if status < 500 else "internal"
        text = (f"malformed HTTP request: {reason}" if status < 500
                else "internal error; see the daemon log")
        resp = error_response(status, code, text)
        resp.force_close()
        return resp


def _first_line(text: str) -> str:
    # aiohttp's parser messages quote the offending bytes on later lines: never echo those.
    return text.strip().split("\n", 1)[0][:200]


def _self_test() -> bool:
    params = list(inspect.signature(web.RequestHandler.handle_error).parameters)
    return params[:5] == ["self", "request", "status", "exc", "message"]


class ApiServer:
    """Listening sockets, accept loops and the aiohttp runner for one application."""

    def __init__(self, cfg: ServerConfig, ssl_context: ssl.SSLContext) -> None:
        self.cfg = cfg
        self._ssl = ssl_context
        self.tracker = ConnectionTracker(Timeouts(
            header_s=cfg.header_timeout_s, body_s=cfg.body_timeout_s,
            keepalive_s=cfg.keepalive_timeout_s))
        self._sockets: list[socket.socket] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self._factory: Callable[[], asyncio.Protocol] | None = None
        self._open = 0
        self._closed_since_trim = 0
        self._trim_timer: asyncio.TimerHandle | None = None
        self._refused = 0
        self._refused_logged_at = 0.0
        self._trim = _malloc_trim()

    @property
    def open_connections(self) -> int:
        """Accepted and not yet closed, including those still in their TLS handshake."""
        return self._open

    # -- start-up ------------------------------------------------------------------------------
    def bind(self) -> None:
        """Open the listening sockets (fails here if the address is in use)."""
        _raise_fd_limit(self.cfg.max_connections + _FD_HEADROOM)
        infos = socket.getaddrinfo(self.cfg.host, self.cfg.port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
        try:
            for family, _, _, _, addr in dict.fromkeys(infos):
                sock = socket.create_server(addr[:2], family=family, backlog=128)
                sock.setblocking(False)
                self._sockets.append(sock)
        except OSError:
            self._close_sockets()
            raise

    async def start(self, app: web.Application) -> None:
        """Serve ``app`` on the bound sockets."""
        app[CONNECTIONS] = self.tracker
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     shutdown_timeout=5.0)
        await self._runner.setup()
        self._factory = self._handler_factory(self._runner.server)
        for sock in self._sockets:
            self._spawn(self._accept_loop(sock))

    def _handler_factory(self, server: web.Server | None) -> Callable[[], asyncio.Protocol]:
        assert server is not None
        loop = asyncio.get_running_loop()
        kwargs: dict[str, Any] = {"keepalive_timeout": self.cfg.keepalive_timeout_s,
                                  "lingering_time": min(10.0, self.cfg.body_timeout_s),
                                  "access_log": None}
        if _self_test():
            with contextlib.suppress(TypeError):
                JsonErrorRequestHandler(server, loop=loop, **kwargs)
                return lambda: JsonErrorRequestHandler(server, loop=loop, **kwargs)
        log.warning("http_error_handler_fallback",
                    reason="aiohttp's RequestHandler differs from what aftd was built for; "
                           "parse errors are answered by aiohttp as plain text")
        return server

    # -- accepting ---------------------------------------------------------------------------
    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(listener)
            except OSError as exc:  # EMFILE and friends: wait for connections to close
                log.warning("accept_failed", error=str(exc))
                await asyncio.sleep(_ACCEPT_BACKOFF_S)
                continue
            if self._open >= self.cfg.max_connections:
                self._refuse(conn)
                continue
            self._open += 1
            self._spawn(self._connect(conn))

    def _refuse(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            # Linger 0: the close sends a reset and frees the socket at once (no TIME_WAIT).
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
        self._refused += 1
        now = time.monotonic()
        if now - self._refused_logged_at >= _REFUSED_LOG_INTERVAL_S:
            log.warning("connections_refused", count=self._refused,
                        max_connections=self.cfg.max_connections)
            self._refused_logged_at = now
            self._refused = 0

    async def _connect(self, conn: socket.socket) -> None:
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._connection_closed()

        def protocol() -> asyncio.Protocol:
            assert self._factory is not None
            return GuardedProtocol(self._factory(), self.tracker, release)

        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(
                protocol, conn, ssl=self._ssl, ssl_handshake_timeout=self.cfg.header_timeout_s)
        except BaseException as exc:
            release()
            conn.close()
            if not isinstance(exc, Exception):
                raise
            log.debug("tls_handshake_failed", error_type=type(exc).__name__)

    def _connection_closed(self) -> None:
        self._open -= 1
        self._closed_since_trim += 1
        if self._trim is None or self._closed_since_trim < _TRIM_AFTER_CLOSED:
            return
        # Once per burst: a second after the last of many connections closed.
        if self._trim_timer is not None:
            self._trim_timer.cancel()
        self._trim_timer = asyncio.get_running_loop().call_later(_TRIM_DELAY_S, self._trim_now)

    def _trim_now(self) -> None:
        self._trim_timer = None
        self._closed_since_trim = 0
        if self._trim is not None:
            started = time.perf_counter()
            self._trim(0)
            log.debug("malloc_trimmed", ms=round((time.perf_counter() - started) * 1000, 1))

    # -- shutdown ------------------------------------------------------------------------------
    async def close(self) -> None:
        """Stop accepting, then let aiohttp finish in-flight requests and close the rest."""
        if self._trim_timer is not None:
            self._trim_timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._close_sockets()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.tracker.abort_all()

    def _close_sockets(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None elsewhere (musl, macOS) or when ``AFTD_MALLOC_TRIM=0``
    (bench/conn_flood_bench.py --no-trim compares)."""
    if os.environ.get("AFTD_MALLOC_TRIM") == "0":
        return None
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        fn = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    trim: Callable[[int], int] = fn
    return trim


def _raise_fd_limit(wanted: int) -> None:
    """Every connection is a file descriptor; the soft limit is often 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        if new < wanted:
            log.warning("fd_limit_low", limit=new, wanted=wanted,
                        hint="raise LimitNOFILE or lower server.max_connections")
