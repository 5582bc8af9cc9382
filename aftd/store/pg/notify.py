"""Notifications in the fleet's PostgreSQL database (:class:`aftd.notify.store.NotifyStore`):
the same rows as the SQLite store, plus the host that delivers each (``owner``) and the lease
epoch it holds it under, as in the report outbox (:mod:`aftd.store.pg.outbox`). A host sends
only its own rows, and only while its lease is valid; every write checks owner and epoch, so a
host whose lease was taken over changes nothing. A takeover moves a silent host's pending
notifications and job intents to the live host (:mod:`aftd.store.pg.hosts`), which delivers
them with their original Idempotency-Keys and settles the intents of the jobs it recorded
interrupted. An Idempotency-Key is unique fleet-wide: an event queued by two hosts is one row.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from aftd.notify.store import NOTIFY_TABLE, NewNotification, NotifyRow
from aftd.store.pg.db import Db
from aftd.store.pg.deliverytable import PgDeliveryTable
from aftd.store.pg.lease import Lease

__all__ = ["PgNotifyStore"]


class PgNotifyStore(PgDeliveryTable[NotifyRow]):
    """See the module docstring. The delivery bookkeeping (``due``, ``retry_later``,
    ``finish``, ...) is the shared :class:`aftd.store.pg.deliverytable.PgDeliveryTable`'s."""

    def __init__(self, db: Db, lease: Lease) -> None:
        super().__init__(db, lease, NOTIFY_TABLE)

    def pending_count(self) -> int:
        return self.open_count("pending")

    # -- intents ---------------------------------------------------------------------------
    async def add_intent(self, job_id: str, now: float) -> None:
        await self._db.execute(
            "INSERT INTO notify_intents (job_id, created_at, owner) VALUES ($1, $2, $3)"
            " ON CONFLICT (job_id) DO NOTHING", job_id, now, self._lease.host_id)

    async def intents(self) -> list[str]:
        rows = await self._db.fetch(
            "SELECT job_id FROM notify_intents WHERE owner = $1 ORDER BY created_at",
            self._lease.host_id)
        return [str(r[0]) for r in rows]

    async def enqueue(self, rows: Sequence[NewNotification], now: float, *,
                      settle_job: str | None = None) -> int:
        if not rows and settle_job is None:
            return 0
        lease = self._lease
        args = [(r.notify, r.event, r.job_id, r.url, r.url_secret, r.hmac_secret,
                 r.idempotency_key, r.body, now, lease.host_id, lease.epoch) for r in rows]

        async def work(c: asyncpg.Connection) -> int:
            added = 0
            for a in args:
                done = await c.execute(
                    "INSERT INTO notify_outbox (notify, event, job_id, url, url_secret,"
                    " hmac_secret, idempotency_key, body, state, created_at, next_at, owner,"
                    " owner_epoch) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9, $9,"
                    " $10, $11) ON CONFLICT (idempotency_key) DO NOTHING", *a)
                added += int(done.split()[-1])
            if settle_job is not None:
                await c.execute("DELETE FROM notify_intents WHERE job_id = $1", settle_job)
            return added
        added = await self._db.tx(work)
        self._open_counts["pending"] += added
        return added

    # -- delivery bookkeeping beyond the shared (PgDeliveryTable) --------------------------
    async def due(self, now: float, limit: int) -> list[NotifyRow]:
        if not self._lease.valid():  # a host whose lease may have lapsed sends nothing
            return []
        return await super().due(now, limit)

    async def finish(self, row_id: int, state: str, attempts: int, status: int | None,
                     error: str | None, now: float) -> None:
        if await self._finish(row_id, state, attempts, status, error, now):
            self._open_counts["pending"] = max(0, self._open_counts["pending"] - 1)
