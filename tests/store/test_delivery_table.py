"""The shared delivery bookkeeping (aftd/deliverytable.py, aftd/store/pg/deliverytable.py) on
both of its tables (report outbox, notifications) and both backends (SQLite, PostgreSQL): a
row is due, is put off, comes due again, is finished once, and is pruned; the open counts in
memory follow (at once on SQLite, within the background refresh on PostgreSQL)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from aftd.notify.store import NewNotification, SqliteNotifyStore
from aftd.report.store import OutboxStore
from aftd.store.pg.hosts import register
from aftd.store.pg.lease import Lease
from aftd.store.pg.notify import PgNotifyStore
from aftd.store.pg.outbox import PgOutboxStore
from tests.store.conftest import fresh_db

CASES = [("outbox", "sqlite"), ("outbox", "postgres"), ("notify", "sqlite"),
         ("notify", "postgres")]


async def _add_report(store: Any, key: str, now: float) -> int:
    rid = int(await store.add_intent("job-1", "https://o.example/r", None, {"s": 0}, key, now))
    assert await store.submit(rid, {"status": "ok"}, now)
    return rid


async def _add_note(store: Any, key: str, now: float) -> int:
    note = NewNotification(notify="ops", event="job.failed", job_id="job-1",
                           url="https://hooks.example/x", url_secret=None, hmac_secret=None,
                           idempotency_key=key, body="{}")
    assert await store.enqueue([note], now) == 1
    return int((await store.due(now, 100))[-1].id)


async def _pending_reaches(store: Any, n: int) -> None:
    deadline = time.monotonic() + 60.0
    while store.open_count("pending") != n and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert store.open_count("pending") == n


@pytest.fixture(params=CASES, ids=["-".join(c) for c in CASES])
async def table(request: pytest.FixtureRequest, tmp_path: Path
                ) -> AsyncIterator[tuple[Any, Callable[[Any, str, float], Awaitable[int]]]]:
    kind, backend = request.param
    db = None
    if backend == "sqlite":
        store: Any = (OutboxStore if kind == "outbox" else SqliteNotifyStore)(tmp_path / "d.db")
    else:
        db = await fresh_db(request.getfixturevalue("postgres"))
        lease = Lease("h1", (), 30.0)
        await register(db, lease)
        store = (PgOutboxStore if kind == "outbox" else PgNotifyStore)(db, lease)
    await store.open()
    yield store, (_add_report if kind == "outbox" else _add_note)
    await store.close()
    if db is not None:
        await db.close()


async def test_a_row_goes_through_the_delivery_bookkeeping(
        table: tuple[Any, Callable[[Any, str, float], Awaitable[int]]]) -> None:
    store, add = table
    a = await add(store, "k-a", 100.0)
    b = await add(store, "k-b", 101.0)
    assert [r.id for r in await store.due(102.0, 10)] == [a, b]
    assert [r.id for r in await store.due(102.0, 1)] == [a]
    await _pending_reaches(store, 2)
    await store.retry_later(a, 1, 503, "HTTP 503", 200.0)
    assert [r.id for r in await store.due(102.0, 10)] == [b]
    assert await store.next_due_after(102.0) == pytest.approx(200.0)
    row = await store.get(a)
    assert (row.attempts, row.last_status, row.last_error) == (1, 503, "HTTP 503")
    await store.finish(a, "delivered", 2, 200, None, 201.0)
    await store.finish(a, "abandoned", 3, 500, "late", 202.0)  # already final: no change
    await store.finish(b, "abandoned", 5, 500, "gave up", 203.0)
    done, gone = await store.get(a), await store.get(b)
    assert (done.state, done.attempts, done.delivered_at, done.next_at) == (
        "delivered", 2, 201.0, None)
    assert (gone.state, gone.delivered_at, gone.last_error) == ("abandoned", None, "gave up")
    assert await store.due(1e9, 10) == [] and await store.next_due_after(0.0) is None
    await _pending_reaches(store, 0)
    assert await store.prune(100.5) == 1  # only rows created before the cut
    assert await store.get(a) is None and await store.get(b) is not None
    assert await store.get(987654) is None
