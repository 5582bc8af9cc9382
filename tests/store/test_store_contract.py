"""One suite, both stores: what the runner, the API and the outbox rely on holds for SQLite
(one host) and PostgreSQL (a fleet) alike."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from aftd.jobs.model import Job, JobState
from aftd.jobs.store import IdempotencyConflict, JobStore
from aftd.report.store import OutboxStore
from aftd.store.base import JobStorage, OutboxStorage
from aftd.store.pg.hosts import register
from aftd.store.pg.jobs import PgJobStore
from aftd.store.pg.lease import Lease
from aftd.store.pg.outbox import PgOutboxStore
from tests.store.conftest import fresh_db

BACKENDS = ["sqlite", "postgres"]


def _job(i: int, key: str | None = None, script: str = "s", params: object = None,
         tags: tuple[str, ...] = ()) -> Job:
    return Job(id=f"job-{i}", script_id=script,
               params={"i": i} if params is None else params,  # type: ignore[arg-type]
               status=JobState.QUEUED, created_at=time.time(), idempotency_key=key,
               host_tags=tags)


@pytest.fixture(params=BACKENDS)
async def stores(request: pytest.FixtureRequest,
                 tmp_path: Path) -> AsyncIterator[tuple[JobStorage, OutboxStorage]]:
    if request.param == "sqlite":
        path = tmp_path / "db.sqlite"
        jobs: Any = JobStore(path)
        outbox: Any = OutboxStore(path)
    else:
        db = await fresh_db(request.getfixturevalue("postgres"))
        lease = Lease("h1", (), 3.0)
        await register(db, lease)
        jobs, outbox = PgJobStore(db, lease), PgOutboxStore(db, lease)
    await jobs.open()
    await outbox.open()
    yield jobs, outbox
    await outbox.close()
    await jobs.close()
    if request.param != "sqlite":
        await db.close()


@pytest.fixture
def jobs(stores: tuple[JobStorage, OutboxStorage]) -> JobStorage:
    return stores[0]


@pytest.fixture
def outbox(stores: tuple[JobStorage, OutboxStorage]) -> OutboxStorage:
    return stores[1]


async def test_idempotency_key_returns_existing_or_conflicts(jobs: JobStorage) -> None:
    first, created = await jobs.create(_job(1, key="k", tags=("zone:eu",)))
    assert created
    again, created2 = await jobs.create(_job(2, key="k", params={"i": 1}, tags=("zone:eu",)))
    assert not created2 and again.id == first.id
    with pytest.raises(IdempotencyConflict):
        await jobs.create(_job(3, key="k"))
    with pytest.raises(IdempotencyConflict):  # other tags: another request
        await jobs.create(_job(4, key="k", params={"i": 1}))


async def test_concurrent_creates_with_one_key_make_one_job(jobs: JobStorage) -> None:
    results = await asyncio.gather(*(jobs.create(_job(i, key="same", params={"x": 1}))
                                     for i in range(8)))
    assert sum(created for _, created in results) == 1
    assert len({job.id for job, _ in results}) == 1


async def test_tags_params_and_timeout_round_trip(jobs: JobStorage) -> None:
    job = _job(1, params={"a": "x", "n": 1.5, "b": True}, tags=("vfs:archive", "zone:eu"))
    job.timeout_s = 7.0
    await jobs.create(job)
    got = await jobs.get("job-1")
    assert got is not None and got.params == {"a": "x", "n": 1.5, "b": True}
    assert sorted(got.host_tags) == ["vfs:archive", "zone:eu"] and got.timeout_s == 7.0
    assert await jobs.get("nope") is None


async def test_paging_and_filters(jobs: JobStorage) -> None:
    for i in range(1, 8):
        await jobs.create(_job(i, script="a" if i % 2 else "b"))
    page = await jobs.list_jobs(limit=3)
    assert [j.id for j in page] == ["job-7", "job-6", "job-5"]
    nxt = await jobs.list_jobs(limit=3, before_seq=page[-1].seq)
    assert [j.id for j in nxt] == ["job-4", "job-3", "job-2"]
    assert {j.script_id for j in await jobs.list_jobs(script_id="a")} == {"a"}
    assert await jobs.list_jobs(status=["running"]) == []
    assert len(await jobs.list_jobs(status=["queued", "running"])) == 7
    assert await jobs.queued_ids() == [f"job-{i}" for i in range(1, 8)]


async def test_logs_are_bounded_and_rewritable(jobs: JobStorage) -> None:
    await jobs.append_logs("j", [(i, {"event": f"e{i}"}) for i in range(1, 101)], keep=10)
    await jobs.append_logs("j", [(100, {"event": "again"})], keep=10)  # a retried batch
    lines = await jobs.logs("j")
    assert [line["seq"] for line in lines] == list(range(91, 101))
    assert lines[-1]["event"] == "again"
    assert await jobs.last_log_seq("j") == 100
    assert [x["seq"] for x in await jobs.logs("j", after_seq=98)] == [99, 100]


async def test_running_finished_and_pruned(jobs: JobStorage) -> None:
    job, _ = await jobs.create(_job(1))
    await jobs.set_running(job.id, time.time())
    job.status, job.finished_at, job.exit_code = JobState.SUCCEEDED, time.time(), 0
    job.progress.files_done = 3
    await jobs.finish(job)
    got = await jobs.get(job.id)
    assert got is not None and got.status is JobState.SUCCEEDED and got.progress.files_done == 3
    await jobs.recount()
    assert jobs.counts()["succeeded"] == 1
    await jobs.append_logs(job.id, [(1, {"event": "x"})], keep=10)
    assert await jobs.prune(time.time() + 1) == 1
    assert await jobs.get(job.id) is None and await jobs.logs(job.id) == []


async def test_outbox_intent_submit_deliver(outbox: OutboxStorage) -> None:
    now = time.time()
    rid = await outbox.add_intent("j1", "http://o/report", "tok", {"s": "failed"}, "key-1", now)
    assert await outbox.add_intent("j1", "http://o/report", "tok", {"s": "failed"}, "key-1",
                                   now) == rid  # one report per key
    assert await outbox.due(now + 1, 10) == []
    assert await outbox.submit(rid, {"s": "completed"}, now)
    assert not await outbox.submit(rid, {"s": "late"}, now)  # fixed once
    (row,) = await outbox.due(now + 1, 10)
    assert row.id == rid and row.body == '{"s":"completed"}' and row.state == "pending"
    await outbox.retry_later(rid, 1, 503, "HTTP 503", now + 60)
    assert await outbox.due(now + 1, 10) == []
    assert await outbox.next_due_after(now + 1) == pytest.approx(now + 60)
    await outbox.finish(rid, "delivered", 2, 200, None, now + 61)
    got = await outbox.get(rid)
    assert got is not None and got.state == "delivered" and got.attempts == 2
    assert (await outbox.latest_for_job("j1")).id == rid  # type: ignore[union-attr]
    assert await outbox.prune(now + 1) == 1 and await outbox.get(rid) is None


async def test_outbox_release_and_void(outbox: OutboxStorage) -> None:
    now = time.time()
    a = await outbox.add_intent("ja", "http://o/a", None, {"s": "failed"}, "ka", now)
    b = await outbox.add_intent("jb", "http://o/b", None, {"s": "failed"}, "kb", now)
    c = await outbox.add_intent("jc", "http://o/c", None, {"s": "failed"}, "kc", now)
    assert await outbox.void_intent(c) and not await outbox.void_intent(c)
    assert await outbox.release("ja", now) == 1
    assert [r.id for r in await outbox.due(now + 1, 10)] == [a]
    assert await outbox.release(None, now) == 1
    rows = await outbox.due(now + 1, 10)
    assert {r.id for r in rows} == {a, b} and all(r.body == '{"s":"failed"}' for r in rows)


async def test_outbox_lists_and_retries(outbox: OutboxStorage) -> None:
    now = time.time()
    ids = [await outbox.add_intent(f"j{i}", "http://o/r", None, {"s": "failed"}, f"k{i}", now)
           for i in range(3)]
    await outbox.release(None, now)
    await outbox.finish(ids[0], "abandoned", 5, 500, "gave up", now)
    listed = await outbox.list_reports(("pending", "abandoned"), 10)
    assert [r.id for r in listed] == sorted(ids, reverse=True)
    assert [r.id for r in await outbox.list_reports(("pending",), 1, before_id=ids[2])] == \
        [ids[1]]
    assert await outbox.retry_now(ids[0], now + 5)
    (again,) = [r for r in await outbox.due(now + 6, 10) if r.id == ids[0]]
    assert again.state == "pending" and again.pending_at == pytest.approx(now + 5)
    await outbox.finish(ids[1], "delivered", 1, 200, None, now)
    assert not await outbox.retry_now(ids[1], now)
