"""PostgreSQL driven by asyncpg: what a shared job store needs (password login, LISTEN/NOTIFY,
SKIP LOCKED queues) and surviving the server going away and coming back."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.fixtures.postgres import PostgresServer


@pytest.fixture
async def dsn(postgres: PostgresServer) -> str:
    return postgres.create_database(f"t_{uuid.uuid4().hex[:16]}")


@pytest.fixture
async def conns(dsn: str) -> AsyncIterator[tuple[asyncpg.Connection, asyncpg.Connection]]:
    a, b = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def test_password_is_required(postgres: PostgresServer) -> None:
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(postgres.dsn().replace(postgres.password, "wrong"))
    url_only = await asyncpg.connect(postgres.url, password=postgres.password)
    try:
        assert await url_only.fetchval("select current_user") == postgres.user
    finally:
        await url_only.close()


async def test_listen_notify_between_connections(
        conns: tuple[asyncpg.Connection, asyncpg.Connection]) -> None:
    listener, notifier = conns
    got: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener("jobs", lambda _c, _pid, _ch, payload: got.put_nowait(payload))
    await notifier.execute("select pg_notify('jobs', 'job-1')")
    assert await asyncio.wait_for(got.get(), 10) == "job-1"


async def test_skip_locked_splits_a_queue(
        conns: tuple[asyncpg.Connection, asyncpg.Connection]) -> None:
    a, b = conns
    await a.execute("create table queue(id int primary key, taken_by text)")
    await a.execute("insert into queue select g, null from generate_series(1, 4) g")
    claim = ("select id from queue where taken_by is null order by id "
             "limit 2 for update skip locked")
    async with a.transaction():
        first = [r["id"] for r in await a.fetch(claim)]
        async with b.transaction():
            second = [r["id"] for r in await b.fetch(claim)]
    assert first == [1, 2] and second == [3, 4]


async def _first_answer(pool: asyncpg.Pool, sql: str) -> object:
    """After a restart the pool still holds connections to the old server: the first query on
    each fails with ConnectionDoesNotExistError, later ones reconnect. Retry, bounded."""
    for _ in range(10):
        try:
            return await pool.fetchval(sql)
        except (asyncpg.ConnectionDoesNotExistError, asyncpg.InterfaceError, OSError):
            await asyncio.sleep(0.2)
    return await pool.fetchval(sql)


async def test_stopped_server_comes_back(postgres: PostgresServer, dsn: str) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2, timeout=10)
    assert pool is not None
    try:
        await pool.execute("create table kept(v text)")
        await pool.execute("insert into kept values ('before')")
        postgres.stop()
        with pytest.raises((OSError, asyncpg.PostgresError, asyncpg.InterfaceError)):
            await pool.fetchval("select 1")
        postgres.start()
        assert await _first_answer(pool, "select v from kept") == "before"
        postgres.kill()  # a crash: recovery replays what was committed
        postgres.start()
        assert await _first_answer(pool, "select v from kept") == "before"
    finally:
        postgres.start()
        await pool.close()
