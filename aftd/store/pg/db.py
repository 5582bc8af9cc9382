"""The connection pool of the fleet store, with one place that turns asyncpg's errors into
:class:`~aftd.store.errors.StoreError` and retries a query once on a connection the server
dropped (after a database restart, each pooled connection fails once before it reconnects).

Why asyncpg (and not psycopg 3): it is asyncio-native end to end (pool, LISTEN callbacks,
prepared statements cached per connection), its binary protocol costs the fewest round-trips
and CPU per query, and the test fixture's checks of LISTEN/NOTIFY, SKIP LOCKED and restart
behaviour were made with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import structlog

from aftd.store.errors import StoreError, StoreUnavailable

__all__ = ["Db", "describe", "translate"]

log = structlog.get_logger("aftd.store")

T = TypeVar("T")
CONNECT_TIMEOUT_S = 10.0
COMMAND_TIMEOUT_S = 30.0

# Errors that mean "the connection or the server is gone": retried by the caller later.
_GONE: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.ConnectionFailureError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    ConnectionError,
    OSError,
    TimeoutError,
)


# A pooled connection that is no longer usable: the statement never ran, so once more is safe.
_STALE: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)


async def _expire(pool: asyncpg.Pool) -> None:
    """Make the pool replace every connection it holds (they died with the server)."""
    try:
        await pool.expire_connections()
    except Exception as exc:  # best effort: the next failure tries again
        log.debug("pool_expire_failed", error=describe(exc))


def describe(exc: BaseException) -> str:
    """A one-line cause without the DSN (which may hold the password)."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:300]


def translate(exc: BaseException) -> StoreError:
    if isinstance(exc, _GONE):
        return StoreUnavailable(f"the database is unavailable ({describe(exc)})")
    return StoreError(f"database error ({describe(exc)})")


class Db:
    """An asyncpg pool opened lazily and reopened after it failed."""

    def __init__(self, dsn: str, password: str | None, *, size: int) -> None:
        self._dsn = dsn
        self._password = password
        self._size = size
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:  # never the password
        return f"Db({self._dsn!r})"

    async def connect(self) -> asyncpg.Connection:
        """A connection of its own (for LISTEN), not from the pool."""
        try:
            conn: asyncpg.Connection = await asyncpg.connect(
                self._dsn, password=self._password, timeout=CONNECT_TIMEOUT_S,
                command_timeout=COMMAND_TIMEOUT_S)
        except Exception as exc:
            raise translate(exc) from None
        return conn

    async def _get_pool(self) -> asyncpg.Pool:
        async with self._lock:
            if self._pool is None:
                try:
                    self._pool = await asyncpg.create_pool(
                        self._dsn, password=self._password, min_size=1, max_size=self._size,
                        timeout=CONNECT_TIMEOUT_S, command_timeout=COMMAND_TIMEOUT_S,
                        max_inactive_connection_lifetime=60.0)
                except Exception as exc:
                    raise translate(exc) from None
            return self._pool

    async def run(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """``fn(conn)`` on a pooled connection. A connection the server dropped (after a
        restart every pooled one is stale) makes the pool reconnect all of them, and the call
        is tried once more."""
        for attempt in (1, 2):
            pool = await self._get_pool()
            try:
                async with pool.acquire(timeout=CONNECT_TIMEOUT_S) as conn:
                    return await fn(conn)
            except StoreError:
                raise
            except _STALE as exc:
                await _expire(pool)
                if attempt == 2:
                    raise translate(exc) from None
            except (asyncpg.PostgresError, OSError, TimeoutError) as exc:
                if isinstance(exc, _GONE):
                    await _expire(pool)
                raise translate(exc) from None
        raise AssertionError("unreachable")

    async def tx(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """``fn(conn)`` inside one transaction."""
        async def work(conn: asyncpg.Connection) -> T:
            async with conn.transaction():
                return await fn(conn)
        return await self.run(work)

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return await self.run(lambda c: c.fetch(sql, *args))

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        return await self.run(lambda c: c.fetchrow(sql, *args))

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self.run(lambda c: c.fetchval(sql, *args))

    async def execute(self, sql: str, *args: Any) -> str:
        return await self.run(lambda c: c.execute(sql, *args))

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), 5.0)
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                pool.terminate()
