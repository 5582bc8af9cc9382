"""One suite, both trigger stores: the SQLite file of one host and the fleet's PostgreSQL
database behave alike. Two stores on the same file or database stand for two processes (or two
hosts) racing for the same fires: each fire is won once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from aftd.store.pg.db import Db
from aftd.store.pg.triggers import PgTriggerStore
from aftd.triggers.files import file_key
from aftd.triggers.store import Fire, SqliteTriggerStore, TriggerStore
from tests.store.conftest import fresh_db

MakeStore = Callable[[], Awaitable[TriggerStore]]


def fire(key: str, *, kind: str = "schedule", path: str | None = None, **kw: object) -> Fire:
    return Fire(trigger="t", key=key, kind=kind, script="s", params={"k": key}, path=path,
                **kw)  # type: ignore[arg-type]


@pytest.fixture(params=["sqlite", "postgres"])
async def make_store(request: pytest.FixtureRequest,
                     tmp_path: Path) -> AsyncIterator[MakeStore]:
    """Opens stores on one shared file or database; all are closed at the end."""
    db: Db | None = None
    if request.param == "postgres":
        db = await fresh_db(request.getfixturevalue("postgres"))
    opened: list[Any] = []

    async def make() -> TriggerStore:
        store: Any = SqliteTriggerStore(tmp_path / "s.sqlite") if db is None \
            else PgTriggerStore(db)
        await store.open()
        opened.append(store)
        return store  # type: ignore[no-any-return]

    yield make
    for store in opened:
        await store.close()
    if db is not None:
        await db.close()


async def test_racing_claimers_win_each_fire_once(make_store: MakeStore) -> None:
    a, b = await make_store(), await make_store()
    keys = [f"due:{i}" for i in range(1200)]  # more than one claim batch
    won_a, won_b = await asyncio.gather(
        *(store.claim([fire(k) for k in keys], 1.0) for store in (a, b)))
    a_keys, b_keys = {f.key for f in won_a}, {f.key for f in won_b}
    assert not a_keys & b_keys and a_keys | b_keys == set(keys)
    assert await a.claim([fire("due:1"), fire("new"), fire("new")], 2.0) == [
        fire("new", claimed_at=2.0, updated_at=2.0)]
    assert await b.is_claimed("t", "due:1199") and not await b.is_claimed("t", "due:1200")
    assert await a.count("t", "claimed") == 1201


async def test_outcome_recorded_before_the_submit_is_kept(make_store: MakeStore) -> None:
    store = await make_store()
    [f] = await store.claim([fire("due:1")], 1.0)
    # A fast job ends before its submit is recorded: the end wins.
    ended = await store.job_ended(f.idempotency_key, "job-1", "failed", "job failed", 2.0)
    assert ended is not None and (ended.state, ended.job_id) == ("failed", "job-1")
    await store.mark_submitted([f.with_state("submitted", job_id="job-1")], 3.0)
    [row] = await store.fires(trigger="t")
    assert (row.state, row.error, row.params) == ("failed", "job failed", {"k": "due:1"})
    assert await store.job_ended("no-such-key", "j", "failed", None, 4.0) is None
    assert (await store.by_job("job-1")) == row
    # A retry is a new attempt with a new idempotency key.
    again = row.with_state("claimed", attempt=2, job_id=None, error=None)
    assert again.idempotency_key != row.idempotency_key
    await store.update([again], 5.0)
    assert (await store.fires(trigger="t", states=("claimed",)))[0].attempt == 2
    assert await store.last_fire("t") is None  # the new attempt has no job yet


async def test_a_new_version_replaces_the_finished_rows_of_its_file(
        make_store: MakeStore) -> None:
    store = await make_store()
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
    assert [f.path for f in await store.fires(path="in/b")] == ["in/b"]
    await store.update([other.with_state("done")], 5.0)
    assert await store.prune(["watch"], 10.0) == 1


async def test_a_file_name_that_is_not_utf8_keeps_its_bytes(make_store: MakeStore) -> None:
    store = await make_store()
    name = "in/b\udcff"  # a name that is not UTF-8, as os.listdir gives it (surrogateescape)
    f = fire(file_key("v", name, 1, 10.0), kind="watch", path=name)
    assert await store.claim([f], 1.0)
    assert not await store.claim([f], 2.0)  # the same file version is not fired twice
    assert await store.is_claimed("t", f.key)
    assert [row.path for row in await store.fires(path=name)] == [name]
    assert await store.fire_keys("t") == [f.key]
    await store.update([f.with_state("done")], 3.0)
    assert [(row.key, row.state) for row in await store.fires(trigger="t")] == [(f.key, "done")]
    assert await store.forget("t", [f.key]) == [f.key]
    assert await store.fire_keys("t") == []


async def test_stores_agree_on_a_definition_and_its_pause(make_store: MakeStore) -> None:
    a, b = await make_store(), await make_store()
    first = await a.sync_trigger("t", "def-1", 10.0)
    assert (first.since, first.changed, first.paused) == (10.0, True, False)
    same = await b.sync_trigger("t", "def-1", 20.0)  # another process starting later
    assert (same.since, same.changed) == (10.0, False)
    await b.set_paused("t", True, 30.0)
    changed = await a.sync_trigger("t", "def-2", 40.0)
    assert (changed.since, changed.paused, changed.changed) == (40.0, True, True)  # pause kept
    await a.set_paused("t", False, 50.0)
    assert (await b.sync_trigger("t", "def-2", 60.0)).since == 50.0
