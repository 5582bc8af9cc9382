"""The report outbox in PostgreSQL: the same rows and states as the SQLite outbox, plus the
host that delivers each row (``owner``) and the lease epoch it holds the row under.

A host delivers only its own rows, and every write checks ``owner`` and ``owner_epoch``: once a
live host has taken over a silent host's rows (:mod:`aftd.store.pg.hosts`), whatever the silent
host still tries to write changes nothing, so no report is sent twice by the fleet's bookkeeping.
An Idempotency-Key is unique fleet-wide.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from aftd import strictjson
from aftd.report.store import OUTBOX_TABLE, OutboxRow
from aftd.store.pg.db import Db
from aftd.store.pg.deliverytable import PgDeliveryTable
from aftd.store.pg.lease import Lease

__all__ = ["PgOutboxStore"]


def _dumps(body: Mapping[str, Any]) -> str:
    return strictjson.dumps(body, sort_keys=True)


class PgOutboxStore(PgDeliveryTable[OutboxRow]):
    """:class:`aftd.store.base.OutboxStorage` on PostgreSQL; see the module docstring. The
    delivery bookkeeping (``due``, ``retry_later``, ``finish``, ...) is the shared
    :class:`aftd.store.pg.deliverytable.PgDeliveryTable`'s."""

    def __init__(self, db: Db, lease: Lease) -> None:
        super().__init__(db, lease, OUTBOX_TABLE)

    def delivering(self) -> bool:
        return self._lease.valid()

    # -- creating and fixing reports -------------------------------------------------------
    async def add_intent(self, job_id: str, url: str, token_secret: str | None,
                         failure_body: Mapping[str, Any], key: str, now: float) -> int:
        async def work(c: asyncpg.Connection) -> int:
            rid = await c.fetchval(
                "INSERT INTO report_outbox (job_id, url, token_secret, idempotency_key,"
                " failure_body, state, created_at, owner, owner_epoch)"
                " VALUES ($1, $2, $3, $4, $5, 'intent', $6, $7, $8)"
                " ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
                job_id, url, token_secret, key, _dumps(failure_body), now,
                self._lease.host_id, self._lease.epoch)
            if rid is None:
                rid = await c.fetchval("SELECT id FROM report_outbox WHERE idempotency_key = $1",
                                       key)
            return int(rid)
        report_id = await self._db.run(work)
        self._open_counts["intent"] += 1
        return report_id

    async def void_intent(self, report_id: int) -> bool:
        return await self._write("DELETE FROM report_outbox WHERE id = $1 AND state = 'intent'",
                                 report_id) == 1

    async def submit(self, report_id: int, body: Mapping[str, Any], now: float) -> bool:
        return await self._write(
            "UPDATE report_outbox SET state = 'pending', body = $2, pending_at = $3, next_at = $3"
            " WHERE id = $1 AND state = 'intent'", report_id, _dumps(body), now) == 1

    async def release(self, job_id: str | None, now: float) -> int:
        """This host's unsubmitted intents (of one job, or all) become failure reports."""
        sql = ("UPDATE report_outbox SET state = 'pending', body = failure_body, pending_at = $1,"
               " next_at = $1 WHERE state = 'intent'")
        if job_id is None:
            return await self._write(sql, now)
        return await self._write(sql + " AND job_id = $2", now, job_id)

    # -- delivery bookkeeping beyond the shared (PgDeliveryTable) --------------------------
    async def retry_now(self, report_id: int, now: float) -> bool:
        """Make a report due now; the host asked delivers it (its owner may be gone)."""
        done = await self._db.execute(
            "UPDATE report_outbox SET next_at = $2, pending_at = CASE WHEN state = 'abandoned'"
            " THEN $2 ELSE pending_at END, state = 'pending', owner = $3, owner_epoch = $4"
            " WHERE id = $1 AND state IN ('pending', 'abandoned')", report_id, now,
            self._lease.host_id, self._lease.epoch)
        return done.endswith(" 1")

    # -- queries -------------------------------------------------------------------------
    async def latest_for_job(self, job_id: str) -> OutboxRow | None:
        row = await self._db.fetchrow(self._select("job_id = $1 ORDER BY id DESC LIMIT 1"),
                                      job_id)
        return self._row(row) if row else None

    async def list_reports(self, states: Sequence[str], limit: int,
                           before_id: int | None = None) -> list[OutboxRow]:
        """Reports in ``states`` of the whole fleet, newest first."""
        cursor = "" if before_id is None else " AND id < $3"
        args: list[Any] = [list(states), limit]
        if before_id is not None:
            args.append(before_id)
        rows = await self._db.fetch(
            self._select(f"state = ANY($1::text[]){cursor} ORDER BY id DESC LIMIT $2"), *args)
        return [self._row(r) for r in rows]
