"""Group commit in aftd.dbthread: writes queued together share one transaction, and each still
returns only after that transaction is committed; a failing write takes down only itself, a
failed COMMIT every write of its batch."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from aftd.dbthread import DbThread, connect, transaction

SCHEMA = """
CREATE TABLE parent (id INTEGER PRIMARY KEY);
CREATE TABLE child (id INTEGER PRIMARY KEY,
                    parent INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED);
CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER);
"""


class Traced:
    """A writer connection that records the COMMITs it runs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.commits = 0

    def open(self) -> sqlite3.Connection:
        conn = connect(self.path, busy_timeout_s=10, synchronous="FULL")
        conn.executescript(SCHEMA)
        conn.execute("PRAGMA foreign_keys=ON")
        conn.set_trace_callback(self._trace)
        return conn

    def _trace(self, sql: str) -> None:
        if sql.strip().upper() == "COMMIT":
            self.commits += 1


@pytest.fixture
async def writer(tmp_path: Path) -> AsyncIterator[tuple[DbThread, Traced]]:
    db = DbThread("test-w")
    traced = Traced(tmp_path / "db.sqlite")
    await db.open(traced.open)
    yield db, traced
    await db.close()


def rows(path: Path) -> dict[str, int]:
    """What another connection reads: committed rows only."""
    with sqlite3.connect(path) as conn:
        return dict(conn.execute("SELECT k, v FROM t").fetchall())


def insert(k: str, v: int = 1) -> Callable[[sqlite3.Connection], int]:
    def work(c: sqlite3.Connection) -> int:
        with transaction(c):
            c.execute("INSERT INTO t (k, v) VALUES (?, ?)", (k, v))
        return v
    return work


async def hold_thread(db: DbThread) -> tuple[threading.Event, asyncio.Future[None]]:
    """Keep the connection's thread busy (as a COMMIT waiting on its fsync would) until the
    returned event is set, so the writes issued meanwhile queue up behind it."""
    release, started = threading.Event(), threading.Event()

    def block(_: sqlite3.Connection) -> None:
        started.set()
        release.wait(30)
    fut = asyncio.ensure_future(db.run(block))
    while not started.is_set():
        await asyncio.sleep(0.01)
    return release, fut


async def test_writes_queued_together_share_one_commit(writer: tuple[DbThread, Traced]) -> None:
    db, traced = writer
    release, blocked = await hold_thread(db)
    writes = [asyncio.ensure_future(db.write(insert(f"k{i}", i))) for i in range(50)]
    await asyncio.sleep(0.05)
    assert not any(w.done() for w in writes)  # nothing acknowledged before its COMMIT
    assert rows(traced.path) == {}
    release.set()
    await blocked
    assert await asyncio.gather(*writes) == list(range(50))
    assert traced.commits == 1
    assert rows(traced.path) == {f"k{i}": i for i in range(50)}


async def test_a_lone_write_commits_at_once(writer: tuple[DbThread, Traced]) -> None:
    db, traced = writer
    assert await db.write(insert("a")) == 1
    assert rows(traced.path) == {"a": 1}
    assert traced.commits == 1


async def test_a_failing_write_rolls_back_only_itself(writer: tuple[DbThread, Traced]) -> None:
    db, traced = writer
    await db.write(insert("taken"))

    def two_then_conflict(c: sqlite3.Connection) -> None:
        c.execute("INSERT INTO t (k, v) VALUES ('half', 1)")  # undone with its write
        c.execute("INSERT INTO t (k, v) VALUES ('taken', 2)")

    def python_error(c: sqlite3.Connection) -> None:
        c.execute("INSERT INTO t (k, v) VALUES ('also-undone', 1)")
        raise ValueError("the write's own bug")

    release, blocked = await hold_thread(db)
    before = asyncio.ensure_future(db.write(insert("before")))
    bad = asyncio.ensure_future(db.write(two_then_conflict))
    buggy = asyncio.ensure_future(db.write(python_error))
    after = asyncio.ensure_future(db.write(insert("after")))
    release.set()
    await blocked
    assert await before == 1 and await after == 1
    with pytest.raises(sqlite3.IntegrityError):
        await bad
    with pytest.raises(ValueError, match="own bug"):
        await buggy
    assert rows(traced.path) == {"taken": 1, "before": 1, "after": 1}
    assert traced.commits == 2


async def test_a_failed_commit_fails_every_write_of_the_batch(
        writer: tuple[DbThread, Traced]) -> None:
    db, traced = writer

    def orphan(c: sqlite3.Connection) -> None:  # breaks a deferred check: COMMIT fails
        c.execute("INSERT INTO child (id, parent) VALUES (1, 99)")

    release, blocked = await hold_thread(db)
    writes = [asyncio.ensure_future(db.write(insert("x"))),
              asyncio.ensure_future(db.write(orphan)),
              asyncio.ensure_future(db.write(insert("y")))]
    release.set()
    await blocked
    for w in writes:
        with pytest.raises(sqlite3.IntegrityError):
            await w
    assert rows(traced.path) == {}
    # The connection is usable again afterwards.
    assert await db.write(insert("z")) == 1
    assert rows(traced.path) == {"z": 1}


async def test_a_cancelled_caller_does_not_drop_its_write(
        writer: tuple[DbThread, Traced]) -> None:
    db, traced = writer
    release, blocked = await hold_thread(db)
    w = asyncio.ensure_future(db.write(insert("kept")))
    await asyncio.sleep(0.01)
    w.cancel()
    release.set()
    await blocked
    later = await db.write(insert("later"))  # queued after: done means "kept" is too
    assert later == 1
    assert rows(traced.path) == {"kept": 1, "later": 1}


async def test_transaction_left_open_elsewhere_still_fails_loudly(tmp_path: Path) -> None:
    conn = connect(tmp_path / "db.sqlite", busy_timeout_s=1)
    try:
        conn.executescript(SCHEMA)
        conn.execute("BEGIN")
        with pytest.raises(sqlite3.OperationalError), transaction(conn):
            pass
    finally:
        conn.close()
