"""The SQLite job store's own behaviour: persistence in WAL mode, idempotency by JSON type and
value, recovery, pruning, an old file's migration. What both stores share (idempotency keys,
paging, bounded logs ...) is in tests/store/test_store_contract.py, which runs on SQLite too."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aftd.jobs.model import Job, JobState
from aftd.jobs.store import IdempotencyConflict, JobStore


def _job(i: int, key: str | None = None, script: str = "s", params: object = None) -> Job:
    return Job(id=f"job-{i}", script_id=script,
               params={"i": i} if params is None else params,  # type: ignore[arg-type]
               status=JobState.QUEUED, created_at=time.time(), idempotency_key=key)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[JobStore]:
    s = JobStore(tmp_path / "db.sqlite")
    await s.open()
    yield s
    await s.close()


async def test_survives_reopen_and_uses_wal(tmp_path: Path, store: JobStore) -> None:
    await store.create(_job(1))
    await store.close()
    again = JobStore(tmp_path / "db.sqlite")
    await again.open()
    try:
        assert (await again.get("job-1")).params == {"i": 1}  # type: ignore[union-attr]
        assert again.counts()["queued"] == 1
    finally:
        await again.close()
    with sqlite3.connect(tmp_path / "db.sqlite") as c:
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize("other", [1.0, True, "1"])
async def test_idempotency_compares_json_type_and_value(store: JobStore, other: object) -> None:
    """1, 1.0, true and "1" are different requests, though Python's == calls some equal."""
    await store.create(_job(1, key="k", params={"n": 1}))
    with pytest.raises(IdempotencyConflict):
        await store.create(_job(2, key="k", params={"n": other}))
    same, created = await store.create(_job(3, key="k", params={"n": 1}))
    assert not created and same.id == "job-1"


async def test_interrupt_and_prune_keep_counts(store: JobStore) -> None:
    job, _ = await store.create(_job(1))
    await store.set_running(job.id, time.time())
    assert store.counts()["running"] == 1
    assert await store.interrupt_running(time.time(), "died") == [job.id]
    got = await store.get(job.id)
    assert got is not None and got.status is JobState.INTERRUPTED and got.error == "died"
    assert store.counts()["interrupted"] == 1 and store.counts()["running"] == 0
    await store.append_logs(job.id, [(1, {"event": "x"})], keep=10)
    assert await store.prune(time.time() + 1) == 1
    assert await store.get(job.id) is None and await store.logs(job.id) == []
    assert store.counts()["interrupted"] == 0


async def test_old_store_gains_the_timeout_column(tmp_path: Path) -> None:
    """A job store written before job timeouts existed opens and keeps its jobs."""
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as c:
        c.execute("CREATE TABLE jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL "
                  "UNIQUE, script_id TEXT NOT NULL, params TEXT NOT NULL, status TEXT NOT NULL,"
                  " created_at REAL NOT NULL, started_at REAL, finished_at REAL, exit_code "
                  "INTEGER, error TEXT, idempotency_key TEXT UNIQUE, files_done INTEGER NOT "
                  "NULL DEFAULT 0, files_total INTEGER NOT NULL DEFAULT 0, bytes_done INTEGER "
                  "NOT NULL DEFAULT 0, bytes_total INTEGER NOT NULL DEFAULT 0)")
        c.execute("INSERT INTO jobs (id, script_id, params, status, created_at) VALUES "
                  "('old', 's', '{}', 'queued', 1.0)")
    store = JobStore(path)
    await store.open()
    try:
        old = await store.get("old")
        assert old is not None and old.timeout_s is None
        new = _job(2)
        new.timeout_s = 5.0
        await store.create(new)
        assert (await store.get("job-2")).timeout_s == 5.0  # type: ignore[union-attr]
    finally:
        await store.close()
