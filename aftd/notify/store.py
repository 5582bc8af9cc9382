"""Durable notification rows, beside the report outbox in the same SQLite file.

Two tables: ``notify_outbox`` holds one row per (notification, event), with its body fixed when
the event happened and a unique ``Idempotency-Key`` (queueing the same event twice is one row);
``notify_intents`` holds one row per running job that some ``[[notify]]`` entry wants to hear
about, written when the job starts and removed in the same transaction that queues its end
event. An intent left behind by a crash between the job's final state and its notifications
is settled at the next start (:meth:`aftd.notify.service.Notifications.reconcile`).

:class:`NotifyStore` is the interface the rest of aftd uses; :class:`SqliteNotifyStore` runs
every statement in a connection thread of its own (:mod:`aftd.dbthread`), committing with
``synchronous=FULL`` before an await returns, so a queued notification survives ``kill -9``; its
delivery bookkeeping is the report outbox's (:mod:`aftd.deliverytable`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from aftd.deliverytable import DeliveryTable, SqliteDeliveryTable

__all__ = ["NOTIFY_TABLE", "NewNotification", "NotifyRow", "NotifyStore", "SqliteNotifyStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS notify_outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    notify          TEXT    NOT NULL,
    event           TEXT    NOT NULL,
    job_id          TEXT,
    url             TEXT    NOT NULL,
    url_secret      TEXT,
    hmac_secret     TEXT,
    idempotency_key TEXT    NOT NULL UNIQUE,
    body            TEXT    NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('pending','delivered','abandoned')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_status     INTEGER,
    last_error      TEXT,
    created_at      REAL    NOT NULL,
    next_at         REAL,
    delivered_at    REAL
);
CREATE INDEX IF NOT EXISTS notify_outbox_due ON notify_outbox (state, next_at);
CREATE TABLE IF NOT EXISTS notify_intents (
    job_id     TEXT PRIMARY KEY,
    created_at REAL NOT NULL
) WITHOUT ROWID;
"""

@dataclass(frozen=True)
class NewNotification:
    """A notification to queue: everything its delivery needs, the body already rendered."""

    notify: str
    event: str
    job_id: str | None
    url: str  # "" when url_secret names it
    url_secret: str | None
    hmac_secret: str | None
    idempotency_key: str
    body: str


@dataclass(frozen=True)
class NotifyRow:
    id: int
    notify: str
    event: str
    job_id: str | None
    url: str
    url_secret: str | None
    hmac_secret: str | None
    idempotency_key: str
    body: str
    state: str
    attempts: int
    last_status: int | None
    last_error: str | None
    created_at: float
    next_at: float | None
    delivered_at: float | None

    @property
    def pending_at(self) -> float:
        """The deadline counts from when the event was queued."""
        return self.created_at


class NotifyStore(Protocol):
    """Async access to queued notifications and job intents (SQLite here; a fleet's
    PostgreSQL store implements the same)."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def add_intent(self, job_id: str, now: float) -> None: ...

    async def intents(self) -> list[str]:
        """Job ids with an intent, oldest first."""
        ...

    async def enqueue(self, rows: Sequence[NewNotification], now: float, *,
                      settle_job: str | None = None) -> int:
        """Queue ``rows`` (an idempotency key already there is skipped) and drop the intent of
        ``settle_job``, in one transaction; returns how many rows were new."""
        ...

    async def due(self, now: float, limit: int) -> list[NotifyRow]: ...

    async def next_due_after(self, now: float) -> float | None: ...

    async def retry_later(self, row_id: int, attempts: int, status: int | None,
                          error: str | None, next_at: float) -> None: ...

    async def finish(self, row_id: int, state: str, attempts: int, status: int | None,
                     error: str | None, now: float) -> None: ...

    async def get(self, row_id: int) -> NotifyRow | None: ...

    async def prune(self, before: float) -> int:
        """Delete delivered and abandoned rows created before ``before``."""
        ...

    def pending_count(self) -> int:
        """Notifications waiting for delivery, from memory."""
        ...


NOTIFY_TABLE = DeliveryTable("notify_outbox", NotifyRow, ("pending",), "notify")


class SqliteNotifyStore(SqliteDeliveryTable[NotifyRow]):
    """:class:`NotifyStore` on the daemon's SQLite file (one writer, one reader connection);
    the delivery bookkeeping (``due``, ``retry_later``, ``finish``, ...) is the shared
    :class:`aftd.deliverytable.SqliteDeliveryTable`'s."""

    def __init__(self, path: Path, *, busy_timeout_s: float = 10.0) -> None:
        super().__init__(path, NOTIFY_TABLE, _SCHEMA, busy_timeout_s=busy_timeout_s)

    def pending_count(self) -> int:
        return self.open_count("pending")

    # -- intents ---------------------------------------------------------------------------

    async def add_intent(self, job_id: str, now: float) -> None:
        await self._write("INSERT INTO notify_intents (job_id, created_at) VALUES (?, ?)"
                          " ON CONFLICT (job_id) DO NOTHING", (job_id, now))

    async def intents(self) -> list[str]:
        rows = await self._read(lambda c: c.execute(
            "SELECT job_id FROM notify_intents ORDER BY created_at").fetchall())
        return [str(r[0]) for r in rows]

    async def enqueue(self, rows: Sequence[NewNotification], now: float, *,
                      settle_job: str | None = None) -> int:
        args = [(r.notify, r.event, r.job_id, r.url, r.url_secret, r.hmac_secret,
                 r.idempotency_key, r.body, now, now) for r in rows]

        def work(c: sqlite3.Connection) -> int:
            before = c.total_changes
            c.executemany(
                "INSERT INTO notify_outbox (notify, event, job_id, url, url_secret,"
                " hmac_secret, idempotency_key, body, state, created_at, next_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)"
                " ON CONFLICT (idempotency_key) DO NOTHING", args)
            added = c.total_changes - before
            if settle_job is not None:
                c.execute("DELETE FROM notify_intents WHERE job_id=?", (settle_job,))
            return added
        if not args and settle_job is None:
            return 0
        return await self._transact(work)
