"""Notifications on the fleet's PostgreSQL database: an event queued by two hosts is one row;
a host sends only its own rows; a takeover hands a silent host's rows and intents to a live
host, and the silent host's late writes change nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aftd.notify.store import NewNotification
from aftd.store.pg.db import Db
from aftd.store.pg.hosts import heartbeat, take_over_silent
from aftd.store.pg.notify import PgNotifyStore


def note(key: str, job: str = "j1") -> NewNotification:
    return NewNotification(notify="ops", event="job.failed", job_id=job,
                           url="https://hooks.example/x", url_secret=None, hmac_secret=None,
                           idempotency_key=key, body='{"event": "job.failed"}')


async def test_rows_are_fleet_wide_and_taken_over(pg_db: Db,
                                                  make_lease: Callable[..., Any]) -> None:
    a_lease, b_lease = await make_lease("a"), await make_lease("b")
    a, b = PgNotifyStore(pg_db, a_lease), PgNotifyStore(pg_db, b_lease)
    await a.add_intent("j2", 1.0)
    assert await a.enqueue([note("k1")], 1.0) == 1
    assert await b.enqueue([note("k1")], 1.0) == 0  # the same event from another host
    [row] = await a.due(2.0, 10)
    assert (row.idempotency_key, row.state) == ("k1", "pending")
    assert await b.due(2.0, 10) == []  # not b's to send
    assert await a.intents() == ["j2"] and await b.intents() == []
    # a goes silent: b takes its rows and intents over.
    await asyncio.sleep(a_lease.lease_s + 0.5)
    assert await heartbeat(pg_db, b_lease)
    b_lease.up_since = b_lease.now() - b_lease.lease_s  # b has renewed for a whole lease
    [done] = await take_over_silent(pg_db, b_lease)
    assert (done.host_id, done.notifications_moved) == ("a", 1)
    assert [r.idempotency_key for r in await b.due(3.0, 10)] == ["k1"]
    assert await b.intents() == ["j2"]
    # a's late write is fenced off; b's counts.
    await a.finish(row.id, "delivered", 1, 200, None, 4.0)
    assert (await b.get(row.id)).state == "pending"  # type: ignore[union-attr]
    await b.finish(row.id, "delivered", 1, 200, None, 4.0)
    assert (await a.get(row.id)).state == "delivered"  # type: ignore[union-attr]
    assert await b.enqueue([], 5.0, settle_job="j2") == 0 and await b.intents() == []
