"""The SQLite job store: persistence, idempotency, paging, bounded logs, recovery, pruning."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from aftd.jobs.model import Job, JobState
from aftd.jobs.store import IdempotencyConflict, JobStore


def _job(i: int, key: str | None = None, script: str = "s") -> Job:
    return Job(id=f"job-{i}", script_id=script, params={"i": i}, status=JobState.QUEUED,
               created_at=time.time(), idempotency_key=key)


def test_survives_reopen_and_uses_wal(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "db.sqlite")
    store.create(_job(1))
    store.close()
    store = JobStore(tmp_path / "db.sqlite")
    assert store.get("job-1").params == {"i": 1}  # type: ignore[union-attr]
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_idempotency(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "db.sqlite")
    first, created = store.create(_job(1, key="k"))
    retry = _job(2, key="k")
    retry.params = {"i": 1}
    again, created2 = store.create(retry)
    assert (created, created2) == (True, False)
    assert again.id == first.id
    other = _job(3, key="k")
    other.params = {"different": True}
    with pytest.raises(IdempotencyConflict):
        store.create(other)


def test_paging_and_filters(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "db.sqlite")
    for i in range(10):
        store.create(_job(i, script="a" if i % 2 else "b"))
    page = store.list_jobs(limit=3)
    assert [j.id for j in page] == ["job-9", "job-8", "job-7"]
    nxt = store.list_jobs(limit=3, before_seq=page[-1].seq)
    assert [j.id for j in nxt] == ["job-6", "job-5", "job-4"]
    assert {j.script_id for j in store.list_jobs(script_id="a")} == {"a"}
    assert store.list_jobs(status=["running"]) == []


def test_logs_are_bounded(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "db.sqlite")
    store.append_logs("j", [(i, {"event": f"e{i}"}) for i in range(1, 101)], keep=10)
    lines = store.logs("j")
    assert [x["seq"] for x in lines] == list(range(91, 101))
    assert store.last_log_seq("j") == 100


def test_interrupt_running_and_prune(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "db.sqlite")
    job, _ = store.create(_job(1))
    store.set_running(job.id, time.time())
    assert store.interrupt_running(time.time(), "died") == [job.id]
    got = store.get(job.id)
    assert got is not None and got.status is JobState.INTERRUPTED and got.error == "died"
    store.append_logs(job.id, [(1, {"event": "x"})], keep=10)
    assert store.prune(time.time() + 1) == 1
    assert store.get(job.id) is None and store.logs(job.id) == []
