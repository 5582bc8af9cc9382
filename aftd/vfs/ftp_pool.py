"""Control connections of one ``ftp`` VFS: a bounded pool, its threads, keepalive, reconnects.

An FTP control connection carries one command (or one transfer) at a time, so a connection is
*leased* for an operation and returned afterwards. At most ``max_connections`` exist; a caller
that already holds a lease of this pool (a copy that reads and writes the same server) may take
one more, so a full pool of such copies cannot wait on itself forever. The blocking ``ftplib``
calls run on the pool's own bounded thread pool (one thread per connection it may hold), never
on the event loop. Idle connections get a ``NOOP`` every ``keepalive_s`` and are closed after
``idle_timeout_s``; a connection that failed (dropped, timed out, cancelled mid-call) is
discarded, and the next lease connects afresh. The password is resolved on every connect.
"""

from __future__ import annotations

import asyncio
import contextvars
import ftplib
import ssl
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog

from aftd.errors import TransferError
from aftd.executors import BoundedExecutor
from aftd.secrets.base import SecretResolver
from aftd.vfs.base import TransientError
from aftd.vfs.ftp_client import (
    CONNECTION_ERRORS,
    CertificateError,
    Endpoint,
    FtpClient,
    LoginError,
    ServerFeatures,
    TlsRefusedError,
    tls_context,
)

__all__ = ["FtpConn", "FtpPool", "endpoint"]

T = TypeVar("T")
log = structlog.get_logger(__name__)
# The pools the current task holds a lease of (a copy inside one server nests two leases).
_HELD: contextvars.ContextVar[frozenset[int]] = contextvars.ContextVar(
    "aftd_ftp_leases", default=frozenset())
_QUIT_TIMEOUT_S = 2.0


def endpoint(vfs: str, opts: dict[str, Any]) -> Endpoint:
    return Endpoint(vfs=vfs, host=opts["host"], port=opts["port"], user=opts["user"],
                    tls=opts["tls"], cert_sha256=opts["cert_sha256"], passive=opts["passive"],
                    connect_timeout=opts["connect_timeout_s"], timeout=opts["timeout_s"])


@dataclass(eq=False)
class FtpConn:
    client: FtpClient
    last_used: float = field(default_factory=time.monotonic)
    last_noop: float = field(default_factory=time.monotonic)
    broken: bool = False


class FtpPool:
    def __init__(self, vfs: str, opts: dict[str, Any], secrets: SecretResolver) -> None:
        self.vfs = vfs
        self.opts = opts
        self.ep = endpoint(vfs, opts)
        self.secrets = secrets
        self.limit: int = opts["max_connections"]
        self.executor = BoundedExecutor(f"ftp-{vfs}", self.limit + 1)
        self.features: ServerFeatures | None = None  # from the first login
        self.login_dir: str | None = None
        self._context: Any = None
        self._idle: list[FtpConn] = []
        self._count = 0  # connections that exist or are being made
        self._waiters: list[asyncio.Future[None]] = []
        self._keepalive: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Future[Any]] = set()
        self._closed = False

    @property
    def where(self) -> str:
        return self.ep.where

    # -- leases ------------------------------------------------------------------------------
    @asynccontextmanager
    async def lease(self) -> AsyncIterator[FtpConn]:
        held = _HELD.get()
        conn = await self._acquire(nested=id(self) in held)
        token = _HELD.set(held | {id(self)})
        try:
            yield conn
        finally:
            _HELD.reset(token)
            self._release(conn)

    async def run(self, conn: FtpConn, fn: Callable[..., T], *args: Any) -> T:
        """``fn(client, *args)`` on a pool thread. A cancelled call aborts the connection's
        sockets (so the thread returns at once) and the connection is discarded."""
        fut = self.executor.submit(fn, conn.client, *args)
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            conn.broken = True
            conn.client.abort_sockets()
            await asyncio.wait({fut})
            raise
        except CONNECTION_ERRORS:
            conn.broken = True
            raise
        except ftplib.error_temp as exc:
            if str(exc).startswith("421"):  # the server is closing the connection
                conn.broken = True
            raise
        finally:
            conn.last_used = time.monotonic()

    async def _acquire(self, nested: bool) -> FtpConn:
        if self._closed:
            raise TransferError(f"vfs {self.vfs!r}: the FTP connection pool is closed",
                                vfs=self.vfs)
        while True:
            conn = self._take_idle()
            if conn is not None:
                return conn
            if self._count < self.limit + (1 if nested else 0):
                break
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await fut
            finally:
                with suppress(ValueError):
                    self._waiters.remove(fut)
        self._count += 1
        try:
            return await self._connect()
        except BaseException:
            self._count -= 1
            self._wake()
            raise

    def _take_idle(self) -> FtpConn | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()  # the most recently used: the least likely to be stale
            if now - conn.last_used < self.opts["idle_timeout_s"]:
                return conn
            self._drop(conn, polite=True)
        return None

    def _release(self, conn: FtpConn) -> None:
        if conn.broken or self._closed or self._count > self.limit:
            self._drop(conn, polite=not conn.broken)
        else:
            self._idle.append(conn)
        self._wake()

    def _drop(self, conn: FtpConn, *, polite: bool) -> None:
        self._count -= 1
        if polite:  # QUIT, on a thread: the server may take a moment to answer
            fut = self.executor.submit(_quit, conn.client)
            self._closing.add(fut)
            fut.add_done_callback(self._closing.discard)
        else:
            conn.client.close()

    def _wake(self) -> None:
        for fut in self._waiters:
            if not fut.done():
                fut.set_result(None)

    # -- connecting ---------------------------------------------------------------------------
    async def _connect(self) -> FtpConn:
        password = await self.secrets.get(self.opts["password_secret"])
        client = FtpClient(self.ep, self._tls())
        conn = FtpConn(client)
        try:
            await self.run(conn, FtpClient.open, password)
        except Exception as exc:
            raise self._connect_error(exc) from None
        if self.features is None:
            self.features, self.login_dir = client.features, client.login_dir
            log.info("ftp_connected", vfs=self.vfs, server=self.where, tls=self.ep.tls,
                     features=sorted(client.features.names))
        self._start_keepalive()
        return conn

    def _tls(self) -> Any:
        if self.ep.tls == "none":
            return None
        if self._context is None:
            try:
                self._context = tls_context(self.opts["ca_file"], self.ep.cert_sha256)
            except (OSError, ValueError) as exc:
                raise TransferError(f"vfs {self.vfs!r}: cannot load ca_file "
                                    f"{str(self.opts['ca_file'])!r}: {exc}",
                                    vfs=self.vfs) from None
        return self._context

    def _connect_error(self, exc: Exception) -> TransferError:
        at = f"{self.ep.host}:{self.ep.port}"
        prefix = f"vfs {self.vfs!r}:"
        if isinstance(exc, LoginError):
            return TransferError(f"{prefix} login as {self.where} was refused ({exc})",
                                 vfs=self.vfs)
        if isinstance(exc, CertificateError):
            return TransferError(f"{prefix} TLS certificate of {at} is not trusted: "
                                 f"{exc.args[0]}", vfs=self.vfs)
        if isinstance(exc, TlsRefusedError):
            return TransferError(
                f"{prefix} {at} refused AUTH TLS ({exc}); the server may not offer FTPS "
                "(plain FTP, password in clear, only with tls = \"none\")", vfs=self.vfs)
        if isinstance(exc, ssl.SSLError):
            return TransientError(f"{prefix} TLS with {at} failed: {exc}", vfs=self.vfs)
        reason = str(exc) or type(exc).__name__
        return TransientError(f"{prefix} cannot connect to {self.where}: {reason}",
                              vfs=self.vfs)

    # -- keepalive ----------------------------------------------------------------------------
    def _start_keepalive(self) -> None:
        if self.opts["keepalive_s"] <= 0 or (self._keepalive and not self._keepalive.done()):
            return
        # A context of its own: the task must not inherit the caller's leases.
        self._keepalive = asyncio.get_running_loop().create_task(
            self._keep_alive(), context=contextvars.Context())

    async def _keep_alive(self) -> None:
        every: float = self.opts["keepalive_s"]
        while self._count and not self._closed:
            await asyncio.sleep(min(every, self.opts["idle_timeout_s"]) / 2)
            now = time.monotonic()
            for conn in list(self._idle):
                if conn not in self._idle:  # leased while an earlier NOOP was in flight
                    continue
                if now - conn.last_used >= self.opts["idle_timeout_s"]:
                    self._idle.remove(conn)
                    self._drop(conn, polite=True)
                elif now - conn.last_noop >= every:
                    await self._noop(conn)

    async def _noop(self, conn: FtpConn) -> None:
        self._idle.remove(conn)
        idle_since = conn.last_used
        try:
            await self.run(conn, _noop)
        except (*CONNECTION_ERRORS, ftplib.Error):
            conn.broken = True
        conn.last_noop = time.monotonic()
        conn.last_used = idle_since  # a NOOP is not use: the idle timeout still runs
        self._release(conn)

    # -- closing ------------------------------------------------------------------------------
    async def aclose(self) -> None:
        self._closed = True
        if self._keepalive is not None:
            self._keepalive.cancel()
            with suppress(asyncio.CancelledError):
                await self._keepalive
        idle, self._idle = self._idle, []
        for conn in idle:
            self._drop(conn, polite=True)
        if self._closing:
            await asyncio.wait(set(self._closing), timeout=_QUIT_TIMEOUT_S + 1)
        self._wake()
        self.executor.shutdown(wait=False)


def _noop(c: FtpClient) -> None:
    c.voidcmd("NOOP")


def _quit(c: FtpClient) -> None:
    try:
        if c.sock is not None:
            c.sock.settimeout(_QUIT_TIMEOUT_S)
            c.quit()
    except (*CONNECTION_ERRORS, ftplib.Error):
        pass
    finally:
        c.close()
