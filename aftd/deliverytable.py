"""One delivery table on SQLite: the bookkeeping the report outbox (``report_outbox``) and the
notifications (``notify_outbox``) share, written once and parametrised by table.

A delivery table holds rows owed to some HTTP endpoint. A row is ``pending`` until a 2xx
answer (``delivered``) or its deadline (``abandoned``); ``next_at`` is when it is due next.
The columns this module reads or writes are the same in both tables: ``id``, ``state``,
``attempts``, ``last_status``, ``last_error``, ``created_at``, ``next_at`` and
``delivered_at``; the rest belong to each table's own module.

The table lives in the daemon's SQLite file but owns its connections, each in a thread of its
own (:mod:`aftd.dbthread`): one writer, one reader. Every write commits with
``synchronous=FULL`` before its await returns, so a row survives ``kill -9`` and power loss,
and re-reads the number of open rows (by state) in the same unit of work, so the counts in
memory never lag the write. Writes that arrive together share one transaction and one fsync
(group commit, :meth:`aftd.dbthread.DbThread.write`). The PostgreSQL counterpart is
:mod:`aftd.store.pg.deliverytable`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from aftd.dbthread import DbThread, connect, transaction

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = ["DeliveryTable", "SqliteDeliveryTable"]

R = TypeVar("R", bound="DataclassInstance")
T = TypeVar("T")


@dataclass(frozen=True)
class DeliveryTable(Generic[R]):
    """What differs between two delivery tables: the name, the row type (its fields name the
    columns read, in order) and the states whose rows are counted in memory."""

    name: str
    row: type[R]
    open_states: tuple[str, ...]
    label: str  # names the connection threads and tasks: "aftd-<label>-w"

    @cached_property
    def columns(self) -> str:
        return ", ".join(f.name for f in fields(self.row))

    def open_states_sql(self) -> str:
        """The open states as an SQL list: constants of the code, never input."""
        return ",".join(f"'{s}'" for s in self.open_states)


class SqliteDeliveryTable(Generic[R]):
    """Async access to one delivery table (one writer and one reader connection); subclasses
    add what their table has beyond delivery."""

    def __init__(self, path: Path, table: DeliveryTable[R], schema: str, *,
                 busy_timeout_s: float) -> None:
        self.path = path
        self._table = table
        self._schema = schema
        self._busy_timeout_s = busy_timeout_s
        self._w = DbThread(f"aftd-{table.label}-w")
        self._r = DbThread(f"aftd-{table.label}-r")
        self._open_counts = dict.fromkeys(table.open_states, 0)

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        await self._w.open(self._open_writer)
        await self._r.open(lambda: connect(self.path, busy_timeout_s=self._busy_timeout_s,
                                           synchronous="FULL"))
        self._open_counts = await self._r.run(self._count_open)

    def _open_writer(self) -> sqlite3.Connection:
        conn = connect(self.path, busy_timeout_s=self._busy_timeout_s, synchronous="FULL")
        conn.executescript(self._schema)
        return conn

    async def close(self) -> None:
        await self._r.close()
        await self._w.close()

    def open_count(self, state: str) -> int:
        """Rows in one of the open states, from memory (no database access)."""
        return self._open_counts.get(state, 0)

    # -- building blocks for the subclasses ----------------------------------------------------

    async def _transact(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work`` durably committed (in a transaction it may share with writes queued beside
        it); the open counts are re-read in the same unit of work, so they never lag it."""
        def unit(c: sqlite3.Connection) -> tuple[T, dict[str, int]]:
            with transaction(c):
                result = work(c)
            return result, self._count_open(c)
        result, self._open_counts = await self._w.write(unit)
        return result

    async def _write(self, sql: str, args: tuple[Any, ...]) -> int:
        """One statement in its own durable transaction; the number of rows it changed."""
        return await self._transact(lambda c: c.execute(sql, args).rowcount)

    async def _read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return await self._r.run(work)

    async def _rows(self, where: str, args: tuple[Any, ...] = ()) -> list[R]:
        """Rows of the table ``WHERE where`` (the clause may go on with ORDER BY and LIMIT)."""
        sql = f"SELECT {self._table.columns} FROM {self._table.name} WHERE {where}"  # noqa: S608
        rows = await self._r.run(lambda c: c.execute(sql, args).fetchall())
        return [self._table.row(*r) for r in rows]

    def _count_open(self, c: sqlite3.Connection) -> dict[str, int]:
        rows = c.execute(f"SELECT state, COUNT(*) FROM {self._table.name}"  # noqa: S608
                         f" WHERE state IN ({self._table.open_states_sql()})"
                         " GROUP BY state").fetchall()
        counts = dict.fromkeys(self._table.open_states, 0)
        counts.update({str(r[0]): int(r[1]) for r in rows})
        return counts

    # -- delivery bookkeeping --------------------------------------------------------------

    async def due(self, now: float, limit: int) -> list[R]:
        return await self._rows("state='pending' AND next_at <= ? ORDER BY next_at LIMIT ?",
                                (now, limit))

    async def next_due_after(self, now: float) -> float | None:
        sql = f"SELECT MIN(next_at) FROM {self._table.name} WHERE state='pending' AND next_at > ?"  # noqa: S608
        row = await self._r.run(lambda c: c.execute(sql, (now,)).fetchone())
        return None if row[0] is None else float(row[0])

    async def retry_later(self, row_id: int, attempts: int, status: int | None,
                          error: str | None, next_at: float) -> None:
        await self._write(f"UPDATE {self._table.name} SET attempts=?, last_status=?,"  # noqa: S608
                          " last_error=?, next_at=? WHERE id=? AND state='pending'",
                          (attempts, status, error, next_at, row_id))

    async def finish(self, row_id: int, state: str, attempts: int, status: int | None,
                     error: str | None, now: float) -> None:
        delivered_at = now if state == "delivered" else None
        await self._write(f"UPDATE {self._table.name} SET state=?, attempts=?, last_status=?,"  # noqa: S608
                          " last_error=?, next_at=NULL, delivered_at=? WHERE id=?"
                          " AND state='pending'",
                          (state, attempts, status, error, delivered_at, row_id))

    async def get(self, row_id: int) -> R | None:
        rows = await self._rows("id=?", (row_id,))
        return rows[0] if rows else None

    async def prune(self, before: float) -> int:
        """Delete final rows (delivered, abandoned) created before ``before``."""
        return await self._write(f"DELETE FROM {self._table.name} WHERE state IN"  # noqa: S608
                                 " ('delivered','abandoned') AND created_at < ?", (before,))
