"""What only the fleet store does: claims split between hosts by tags, cancel requests that
reach another host, leases with takeover and fencing, versioned migrations."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from aftd.jobs.model import Job, JobState
from aftd.store.errors import SchemaMismatch
from aftd.store.pg.db import Db
from aftd.store.pg.hosts import heartbeat, register, take_over_silent, unregister
from aftd.store.pg.jobs import PgJobStore
from aftd.store.pg.lease import Lease
from aftd.store.pg.migrate import current_version, latest_version, migrate, require_current
from aftd.store.pg.outbox import PgOutboxStore
from tests.fixtures.postgres import PostgresServer
from tests.store.conftest import fresh_db


def _job(i: int, tags: tuple[str, ...] = ()) -> Job:
    return Job(id=f"job-{i}", script_id="s", params={}, status=JobState.QUEUED,
               created_at=time.time(), host_tags=tags)


async def test_claims_split_the_queue_and_respect_tags(pg_db: Db,
                                                       make_lease: Callable[..., Any]) -> None:
    a = PgJobStore(pg_db, await make_lease("a", ("zone:eu",)))
    b = PgJobStore(pg_db, await make_lease("b", ()))
    for i in range(10):
        await a.create(_job(i, ("zone:eu",) if i % 5 == 0 else ()))
    got_a, got_b = await asyncio.gather(a.claim(4, time.time()), b.claim(4, time.time()))
    ids_a, ids_b = {j.id for j in got_a}, {j.id for j in got_b}
    assert not ids_a & ids_b and len(ids_a) == len(ids_b) == 4
    assert "job-0" not in ids_b and "job-5" not in ids_b  # b lacks zone:eu
    rest = await b.claim(10, time.time())
    assert {j.id for j in rest} & {"job-0", "job-5"} == set()
    tagged = await a.claim(10, time.time())
    assert ids_a | ids_b | {j.id for j in rest} | {j.id for j in tagged} == \
        {f"job-{i}" for i in range(10)}
    job = await a.get("job-0")
    assert job is not None and job.status is JobState.RUNNING and job.host in ("a",)


async def test_cancel_queued_running_finished_unknown(pg_db: Db,
                                                      make_lease: Callable[..., Any]) -> None:
    a = PgJobStore(pg_db, await make_lease("a"))
    await a.create(_job(1))
    await a.create(_job(2))
    first = (await a.claim(1, time.time()))[0]
    queued = "job-2" if first.id == "job-1" else "job-1"
    listener = await pg_db.connect()
    heard: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener("aftd_cancel", lambda *args: heard.put_nowait(args[3]))
    try:
        req = await a.request_cancel(queued, time.time())
        assert req.outcome == "cancelled" and req.job is not None
        assert req.job.status is JobState.CANCELLED
        req = await a.request_cancel(first.id, time.time())
        assert req.outcome == "requested" and req.host == "a"
        assert await asyncio.wait_for(heard.get(), 10) == first.id
        assert await a.cancel_requested() == [first.id]
        assert (await a.request_cancel(queued, time.time())).outcome == "finished"
        assert (await a.request_cancel("nope", time.time())).outcome == "unknown"
    finally:
        await listener.close()


async def test_silent_host_is_taken_over_once_and_fenced(pg_db: Db) -> None:
    a_lease, b_lease, c_lease = Lease("a", (), 3.0), Lease("b", (), 3.0), Lease("c", (), 3.0)
    for lease in (a_lease, b_lease, c_lease):
        await register(pg_db, lease)
    a_jobs, a_box = PgJobStore(pg_db, a_lease), PgOutboxStore(pg_db, a_lease)
    b_box = PgOutboxStore(pg_db, b_lease)
    await a_jobs.create(_job(1))
    (running,) = await a_jobs.claim(1, time.time())
    now = time.time()
    intent = await a_box.add_intent(running.id, "http://o/r", None, {"s": "failed"}, "k1", now)
    done = await a_box.add_intent("old", "http://o/r", None, {"s": "failed"}, "k2", now)
    assert await a_box.submit(done, {"s": "completed"}, now)
    # a goes silent: its heartbeat is older than its lease.
    await pg_db.execute("UPDATE hosts SET heartbeat_at = heartbeat_at - 10 WHERE host_id='a'")
    b_takes, c_takes = await asyncio.gather(take_over_silent(pg_db, b_lease),
                                            take_over_silent(pg_db, c_lease))
    takeovers = b_takes + c_takes
    assert len(takeovers) == 1 and takeovers[0].host_id == "a"
    assert takeovers[0].jobs_interrupted == [running.id]
    assert takeovers[0].intents_released == 1 and takeovers[0].reports_moved == 2
    job = await a_jobs.get(running.id)
    assert job is not None and job.status is JobState.INTERRUPTED
    taker = PgOutboxStore(pg_db, b_lease if b_takes else c_lease)
    due = await taker.due(time.time() + 1, 10)
    assert {r.id: r.body for r in due} == {intent: '{"s":"failed"}', done: '{"s":"completed"}'}
    # a comes back: its lease is gone and none of its writes change anything.
    assert not await heartbeat(pg_db, a_lease)
    assert not await a_box.submit(intent, {"s": "completed"}, time.time())
    await a_box.finish(done, "delivered", 1, 200, None, time.time())
    assert (await taker.get(done)).state == "pending"  # type: ignore[union-attr]
    running.status, running.finished_at = JobState.SUCCEEDED, time.time()
    await a_jobs.finish(running)
    assert (await a_jobs.get(running.id)).status is JobState.INTERRUPTED  # type: ignore[union-attr]
    assert await a_box.due(time.time() + 1, 10) == []
    assert await b_box.due(time.time() + 1, 10) == (due if b_takes else [])
    # Taking over again finds nothing: the silent host was settled once.
    assert await take_over_silent(pg_db, b_lease) == []


async def test_restart_keeps_own_reports_and_clean_stop_hands_them_over(pg_db: Db) -> None:
    lease = Lease("a", (), 3.0)
    await register(pg_db, lease)
    box = PgOutboxStore(pg_db, lease)
    rid = await box.add_intent("j", "http://o/r", None, {"s": "failed"}, "k", time.time())
    first_epoch = lease.epoch
    await unregister(pg_db, lease)
    again = Lease("a", (), 3.0)
    await register(pg_db, again)  # the lapsed lease is taken at once
    assert again.epoch == first_epoch + 1
    box2 = PgOutboxStore(pg_db, again)
    assert await box2.submit(rid, {"s": "completed"}, time.time())  # moved to the new epoch
    assert not await box.submit(rid, {"s": "x"}, time.time())


async def test_schema_versions(postgres: PostgresServer) -> None:
    db = await fresh_db(postgres, migrated=False)
    try:
        with pytest.raises(SchemaMismatch, match=r"aftd db migrate --config x\.toml"):
            await require_current(db, " --config x.toml")
        assert [m.version for m in await migrate(db)] == list(range(1, latest_version() + 1))
        assert await migrate(db) == []
        assert await require_current(db, "") == latest_version()
        await db.execute("INSERT INTO schema_version (version, description) VALUES ($1, 'x')",
                         latest_version() + 1)
        with pytest.raises(SchemaMismatch, match="upgrade aftd"):
            await require_current(db, "")
        assert await current_version(db) == latest_version() + 1
    finally:
        await db.close()
