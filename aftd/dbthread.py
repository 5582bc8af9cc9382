"""One SQLite connection owned by one dedicated thread; the event loop only awaits results.

Why a thread of our own and not aiosqlite: aiosqlite also runs one thread per connection, but it
ships one statement at a time, so a multi-statement transaction (``BEGIN IMMEDIATE`` ... writes
... ``COMMIT``) would interleave with other coroutines' statements on the same connection. Here a
caller hands over a whole unit of work (a plain function of the connection) that runs start to
end in the connection's thread, so transactions stay atomic and the store's SQL stays ordinary
synchronous code that is easy to test.

A unit of work that has started always runs to its end, even if the awaiting coroutine is
cancelled: a commit is never torn in half by a cancel.

Group commit (:meth:`DbThread.write`): writes that queue up while the thread is busy (typically
while a COMMIT waits for its fsync) run together in *one* transaction with one COMMIT, each in a
savepoint of its own. A write's await returns only after that COMMIT, so each caller gets the
same durability as from a transaction of its own; a write that fails rolls back its own
savepoint only, and a COMMIT that fails fails every write of the batch (none of them was
acknowledged). Under load this turns N fsyncs into one; a lone write costs what it did before.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

__all__ = ["MAX_BATCH", "DbThread", "connect", "transaction"]

T = TypeVar("T")
# Writes per shared transaction at most: bounds how long one COMMIT holds the write lock.
MAX_BATCH = 256
_savepoints = itertools.count()
# The connection whose group commit the current thread is running (see transaction()); set
# only there, so a transaction left open by mistake elsewhere still fails loudly at BEGIN.
_grouping = threading.local()


def connect(path: Path, *, busy_timeout_s: float,
            synchronous: str = "NORMAL") -> sqlite3.Connection:
    """A connection in autocommit mode (callers issue BEGIN themselves), WAL, busy timeout."""
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False,
                           timeout=busy_timeout_s)
    conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    return conn


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``; rolled back on any error, the commit's included (a
    failed COMMIT, e.g. on a full disk, must not leave the connection inside a transaction).
    Inside a group commit's transaction: a savepoint, released or rolled back."""
    if getattr(_grouping, "conn", None) is conn:
        with _savepoint(conn):
            yield conn
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


@contextlib.contextmanager
def _savepoint(conn: sqlite3.Connection) -> Iterator[None]:
    name = f"aftd_sp{next(_savepoints)}"
    conn.execute(f"SAVEPOINT {name}")
    try:
        yield
    except BaseException:
        if conn.in_transaction:  # some errors (a full disk) end the whole transaction
            with contextlib.suppress(sqlite3.Error):
                conn.execute(f"ROLLBACK TO {name}")
                conn.execute(f"RELEASE {name}")
        raise
    conn.execute(f"RELEASE {name}")


@dataclass
class _Write(Generic[T]):
    fn: Callable[[sqlite3.Connection], T]
    fut: asyncio.Future[T]
    result: Any = None
    error: BaseException | None = None


class DbThread:
    """Runs functions of one connection in one thread, in submission order."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._conn: sqlite3.Connection | None = None
        self._queued: list[_Write[Any]] = []
        self._queue_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def open(self, opener: Callable[[], sqlite3.Connection]) -> None:
        loop = asyncio.get_running_loop()
        self._conn = await loop.run_in_executor(self._executor, opener)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` in the connection's thread and return its result."""
        conn = self._conn
        if conn is None:
            raise sqlite3.ProgrammingError(f"{self.name}: the database is not open")
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(self._executor, fn, conn)
        # Shielded: a cancelled caller must not drop a write that is queued but not started.
        fut.add_done_callback(_retrieve)
        return await asyncio.shield(fut)

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` in a transaction shared with the writes queued beside it (see the
        module docstring); returns once that transaction is committed. ``fn`` may use
        :func:`transaction` (it becomes a savepoint) or plain statements."""
        if self._conn is None:
            raise sqlite3.ProgrammingError(f"{self.name}: the database is not open")
        loop = self._loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        with self._queue_lock:
            self._queued.append(_Write(fn, fut))
            first = len(self._queued) == 1
        if first:  # otherwise a batch job is already queued and will take this write too
            self._executor.submit(self._run_batch)
        fut.add_done_callback(_retrieve)
        return await asyncio.shield(fut)

    def _take(self) -> list[_Write[Any]]:
        with self._queue_lock:
            batch, self._queued = self._queued[:MAX_BATCH], self._queued[MAX_BATCH:]
            more = bool(self._queued)
        if more:
            self._executor.submit(self._run_batch)
        return batch

    def _run_batch(self) -> None:
        """In the connection's thread: one transaction for every write queued so far."""
        batch = self._take()
        conn = self._conn
        if not batch:
            return
        try:
            if conn is None:
                raise sqlite3.ProgrammingError(f"{self.name}: the database is not open")
            _commit_batch(conn, batch)
        except BaseException as exc:  # the COMMIT (or BEGIN) failed: no write of it holds
            for w in batch:
                w.result = None
                if w.error is None:
                    w.error = exc
        assert self._loop is not None
        self._loop.call_soon_threadsafe(_settle, batch)

    async def close(self) -> None:
        """Close the connection in its own thread, then let the thread end."""
        conn, self._conn = self._conn, None
        if conn is not None:
            loop = asyncio.get_running_loop()
            with contextlib.suppress(sqlite3.Error):
                await loop.run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=False)


def _commit_batch(conn: sqlite3.Connection, batch: list[_Write[Any]]) -> None:
    """Each write in a savepoint, then one COMMIT. A failure that ends the transaction itself
    (SQLite rolls back on a full disk or an I/O error) fails the writes already applied and
    leaves the rest to a fresh transaction."""
    with transaction(conn):
        _grouping.conn = conn
        try:
            _apply_batch(conn, batch)
        finally:
            _grouping.conn = None


def _apply_batch(conn: sqlite3.Connection, batch: list[_Write[Any]]) -> None:
    for i, w in enumerate(batch):
        try:
            with _savepoint(conn):
                w.result = w.fn(conn)
        except Exception as exc:
            w.error = exc
            if not conn.in_transaction:
                for earlier in batch[:i]:
                    if earlier.error is None:
                        earlier.error = exc
                conn.execute("BEGIN IMMEDIATE")


def _settle(batch: list[_Write[Any]]) -> None:
    for w in batch:
        if w.fut.done():
            continue
        if w.error is not None:
            w.fut.set_exception(w.error)
        else:
            w.fut.set_result(w.result)


def _retrieve(fut: asyncio.Future[Any]) -> None:
    # The caller may have been cancelled; the outcome is then nobody's, and must not be
    # reported as "exception never retrieved".
    if not fut.cancelled():
        fut.exception()
