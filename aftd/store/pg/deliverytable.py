"""One delivery table in the fleet's PostgreSQL database: the bookkeeping the report outbox
(``report_outbox``) and the notifications (``notify_outbox``) share, written once and
parametrised by table (:class:`aftd.deliverytable.DeliveryTable`, as on SQLite).

Each row also names the host that delivers it (``owner``) and the lease epoch it holds the row
under (``owner_epoch``). A host sends only its own rows, and every write of a row checks owner
and epoch: once a live host has taken over a silent host's rows (:mod:`aftd.store.pg.hosts`),
whatever the silent host still tries to write changes nothing. The number of this host's open
rows (by state) is kept in memory and refreshed in the background (:mod:`aftd.store.pg.refresh`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar

from aftd.deliverytable import DeliveryTable
from aftd.store.pg.db import Db
from aftd.store.pg.lease import Lease
from aftd.store.pg.refresh import Refresher

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = ["PgDeliveryTable"]

R = TypeVar("R", bound="DataclassInstance")

# "AND owner = $a AND owner_epoch = $b": appended to every write of a row.
_MINE = " AND owner = ${} AND owner_epoch = ${}"


class PgDeliveryTable(Generic[R]):
    """Async access to one delivery table of the fleet; subclasses add what their table has
    beyond delivery."""

    def __init__(self, db: Db, lease: Lease, table: DeliveryTable[R]) -> None:
        self._db = db
        self._lease = lease
        self._table = table
        self._open_counts = dict.fromkeys(table.open_states, 0)
        self._refresher = Refresher(f"aftd-{table.label}-counts", lambda _: self._recount())

    async def open(self) -> None:
        await self._recount()
        self._refresher.start()

    async def close(self) -> None:
        await self._refresher.stop()

    def open_count(self, state: str) -> int:
        """This host's rows in one of the open states, from memory."""
        return self._open_counts.get(state, 0)

    async def _recount(self) -> None:
        rows = await self._db.fetch(
            f"SELECT state, COUNT(*) FROM {self._table.name} WHERE owner = $1"  # noqa: S608
            f" AND state IN ({self._table.open_states_sql()}) GROUP BY state",
            self._lease.host_id)
        counts = dict.fromkeys(self._table.open_states, 0)
        counts.update({str(r[0]): int(r[1]) for r in rows})
        self._open_counts = counts

    # -- building blocks for the subclasses ----------------------------------------------------

    def _mine(self, args: list[Any]) -> str:
        """The owner and epoch check, its two values appended to ``args``."""
        n = len(args)
        args.extend((self._lease.host_id, self._lease.epoch))
        return _MINE.format(n + 1, n + 2)

    async def _write(self, sql: str, *args: Any) -> int:
        """``sql`` on this host's rows only; the number of rows it changed."""
        params = list(args)
        done = await self._db.execute(sql + self._mine(params), *params)
        return int(done.split()[-1])

    def _select(self, where: str) -> str:
        return f"SELECT {self._table.columns} FROM {self._table.name} WHERE {where}"  # noqa: S608

    def _row(self, r: Any) -> R:
        return self._table.row(*r)

    # -- delivery bookkeeping --------------------------------------------------------------

    async def due(self, now: float, limit: int) -> list[R]:
        rows = await self._db.fetch(
            self._select("state = 'pending' AND owner = $1 AND owner_epoch = $2"
                         " AND next_at <= $3 ORDER BY next_at LIMIT $4"),
            self._lease.host_id, self._lease.epoch, now, limit)
        return [self._row(r) for r in rows]

    async def next_due_after(self, now: float) -> float | None:
        value = await self._db.fetchval(
            f"SELECT MIN(next_at) FROM {self._table.name} WHERE state = 'pending'"  # noqa: S608
            " AND owner = $1 AND owner_epoch = $2 AND next_at > $3", self._lease.host_id,
            self._lease.epoch, now)
        return None if value is None else float(value)

    async def retry_later(self, row_id: int, attempts: int, status: int | None,
                          error: str | None, next_at: float) -> None:
        await self._write(f"UPDATE {self._table.name} SET attempts = $2, last_status = $3,"  # noqa: S608
                          " last_error = $4, next_at = $5 WHERE id = $1 AND state = 'pending'",
                          row_id, attempts, status, error, next_at)

    async def finish(self, row_id: int, state: str, attempts: int, status: int | None,
                     error: str | None, now: float) -> None:
        await self._finish(row_id, state, attempts, status, error, now)

    async def _finish(self, row_id: int, state: str, attempts: int, status: int | None,
                      error: str | None, now: float) -> bool:
        """:meth:`finish`; True when the row was this host's and pending."""
        delivered_at = now if state == "delivered" else None
        return await self._write(
            f"UPDATE {self._table.name} SET state = $2, attempts = $3, last_status = $4,"  # noqa: S608
            " last_error = $5, next_at = NULL, delivered_at = $6"
            " WHERE id = $1 AND state = 'pending'",
            row_id, state, attempts, status, error, delivered_at) == 1

    async def get(self, row_id: int) -> R | None:
        row = await self._db.fetchrow(self._select("id = $1"), row_id)
        return self._row(row) if row else None

    async def prune(self, before: float) -> int:
        """Delete final rows (delivered, abandoned) of the whole fleet created before
        ``before``."""
        done = await self._db.execute(
            f"DELETE FROM {self._table.name} WHERE state IN ('delivered', 'abandoned')"  # noqa: S608
            " AND created_at < $1", before)
        return int(done.split()[-1])
