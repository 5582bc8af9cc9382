"""The trigger store: a fire is claimed once, however many claimers race for it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aftd.triggers.files import file_key
from aftd.triggers.store import Fire, SqliteTriggerStore


def fire(key: str, *, kind: str = "schedule", path: str | None = None, **kw: object) -> Fire:
    return Fire(trigger="t", key=key, kind=kind, script="s", params={"k": key}, path=path,
                **kw)  # type: ignore[arg-type]


async def test_racing_claimers_on_one_store_file_win_each_fire_once(tmp_path: Path) -> None:
    """Two stores (as two processes, or two hosts on a shared store) claim the same due times
    at once: every due time is won exactly once."""
    a, b = (SqliteTriggerStore(tmp_path / "s.sqlite") for _ in range(2))
    await a.open()
    await b.open()
    try:
        keys = [f"due:{i}" for i in range(400)]
        won_a, won_b = await asyncio.gather(
            *(store.claim([fire(k) for k in keys], 1.0) for store in (a, b)))
        a_keys, b_keys = {f.key for f in won_a}, {f.key for f in won_b}
        assert not a_keys & b_keys and a_keys | b_keys == set(keys)
        assert await a.claim([fire("due:1")], 2.0) == []
        assert await b.is_claimed("t", "due:399") and not await b.is_claimed("t", "due:400")
    finally:
        await a.close()
        await b.close()


async def test_outcome_recorded_before_the_submit_is_kept(tmp_path: Path) -> None:
    store = SqliteTriggerStore(tmp_path / "s.sqlite")
    await store.open()
    try:
        [f] = await store.claim([fire("due:1")], 1.0)
        # A fast job ends before its submit is recorded: the end wins.
        ended = await store.job_ended(f.idempotency_key, "job-1", "failed", "job failed", 2.0)
        assert ended is not None and (ended.state, ended.job_id) == ("failed", "job-1")
        await store.mark_submitted([f.with_state("submitted", job_id="job-1")], 3.0)
        [row] = await store.fires(trigger="t")
        assert (row.state, row.error) == ("failed", "job failed")
        assert await store.job_ended("no-such-key", "j", "failed", None, 4.0) is None
        # A retry is a new attempt with a new idempotency key.
        again = row.with_state("claimed", attempt=2, job_id=None, error=None)
        assert again.idempotency_key != row.idempotency_key
        await store.update([again], 5.0)
        assert (await store.fires(trigger="t", states=("claimed",)))[0].attempt == 2
    finally:
        await store.close()


async def test_a_new_version_replaces_the_finished_rows_of_its_file(tmp_path: Path) -> None:
    store = SqliteTriggerStore(tmp_path / "s.sqlite")
    await store.open()
    try:
        old = fire(file_key("v", "in/a", 1, 10.0), kind="watch", path="in/a")
        other = fire(file_key("v", "in/b", 1, 10.0), kind="watch", path="in/b")
        await store.claim([old, other], 1.0)
        await store.update([old.with_state("failed", error="x")], 2.0)
        new = fire(file_key("v", "in/a", 2, 11.0), kind="watch", path="in/a")
        assert await store.claim([new], 3.0)
        assert sorted(await store.fire_keys("t")) == sorted([new.key, other.key])
        # Only finished rows are forgotten; a row whose job still runs stays.
        await store.update([new.with_state("done")], 4.0)
        assert await store.forget("t", [new.key, other.key]) == [new.key]
        assert await store.fire_keys("t") == [other.key]
    finally:
        await store.close()


async def test_a_definition_takes_effect_when_it_changes(tmp_path: Path) -> None:
    store = SqliteTriggerStore(tmp_path / "s.sqlite")
    await store.open()
    try:
        first = await store.sync_trigger("t", "def-1", 10.0)
        assert (first.since, first.changed, first.paused) == (10.0, True, False)
        same = await store.sync_trigger("t", "def-1", 20.0)
        assert (same.since, same.changed) == (10.0, False)
        await store.set_paused("t", True, 30.0)
        changed = await store.sync_trigger("t", "def-2", 40.0)
        assert (changed.since, changed.paused) == (40.0, True)  # pause survives a change
        await store.set_paused("t", False, 50.0)
        assert (await store.sync_trigger("t", "def-2", 60.0)).since == 50.0
    finally:
        await store.close()
