"""SQLite persistence of the report outbox: one row per report owed to an orchestrator.

The outbox shares the job store's SQLite file but owns its own connections and table, each
connection in a thread of its own (see :mod:`aftd.dbthread`; the delivery bookkeeping it shares
with the notifications is :mod:`aftd.deliverytable`): the event loop never waits on the
disk, and an outside holder of the write lock delays writes only. Every write commits with
``synchronous=FULL`` before its await returns, so a row survives ``kill -9`` and power loss: the
report it stands for is owed until a 2xx answer or the deadline. Writes that arrive together
share one transaction and one fsync (group commit, :meth:`aftd.dbthread.DbThread.write`). The
number of rows waiting (intents and pending reports) is kept in memory for health and metrics.

Row states: ``intent`` (a claim succeeded; the final body is not known yet), ``pending`` (a body is
fixed and must be delivered), ``delivered`` and ``abandoned`` (final).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aftd import strictjson
from aftd.deliverytable import DeliveryTable, SqliteDeliveryTable

__all__ = ["OUTBOX_TABLE", "OutboxRow", "OutboxStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS report_outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id          TEXT    NOT NULL,
    url             TEXT    NOT NULL,
    token_secret    TEXT,
    idempotency_key TEXT    NOT NULL UNIQUE,
    failure_body    TEXT    NOT NULL,
    body            TEXT,
    state           TEXT    NOT NULL CHECK (state IN ('intent','pending','delivered','abandoned')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_status     INTEGER,
    last_error      TEXT,
    created_at      REAL    NOT NULL,
    pending_at      REAL,
    next_at         REAL,
    delivered_at    REAL
);
CREATE INDEX IF NOT EXISTS report_outbox_due ON report_outbox (state, next_at);
CREATE INDEX IF NOT EXISTS report_outbox_job ON report_outbox (job_id);
"""

@dataclass(frozen=True)
class OutboxRow:
    id: int
    job_id: str
    url: str
    token_secret: str | None
    idempotency_key: str
    body: str | None
    state: str
    attempts: int
    last_status: int | None
    last_error: str | None
    created_at: float
    pending_at: float | None
    next_at: float | None
    delivered_at: float | None


def _dumps(body: Mapping[str, Any]) -> str:
    # Fixed once and stored as text, so every retry sends byte-identical JSON.
    # Strict JSON: the orchestrator's parser may refuse NaN or Infinity (they become null).
    return strictjson.dumps(body, sort_keys=True)


OUTBOX_TABLE = DeliveryTable("report_outbox", OutboxRow, ("intent", "pending"), "outbox")


class OutboxStore(SqliteDeliveryTable[OutboxRow]):
    """Async access to the ``report_outbox`` table (one writer and one reader connection);
    the delivery bookkeeping (``due``, ``retry_later``, ``finish``, ...) is the shared
    :class:`aftd.deliverytable.SqliteDeliveryTable`'s."""

    def __init__(self, path: Path, *, busy_timeout_s: float = 10.0) -> None:
        super().__init__(path, OUTBOX_TABLE, _SCHEMA, busy_timeout_s=busy_timeout_s)

    # -- creating and fixing reports -------------------------------------------------------

    async def add_intent(self, job_id: str, url: str, token_secret: str | None,
                         failure_body: Mapping[str, Any], key: str, now: float) -> int:
        """Insert an intent; the same idempotency key twice is one report (the first row)."""
        args = (job_id, url, token_secret, key, _dumps(failure_body), now)

        def work(c: sqlite3.Connection) -> int:
            c.execute("INSERT INTO report_outbox (job_id, url, token_secret, idempotency_key,"
                      " failure_body, state, created_at) VALUES (?, ?, ?, ?, ?, 'intent', ?)"
                      " ON CONFLICT (idempotency_key) DO NOTHING", args)
            row = c.execute("SELECT id FROM report_outbox WHERE idempotency_key = ?",
                            (key,)).fetchone()
            return int(row[0])
        return await self._transact(work)

    async def void_intent(self, report_id: int) -> bool:
        """Forget an intent whose claim never took effect; False if it is no longer an intent."""
        return await self._write("DELETE FROM report_outbox WHERE id=? AND state='intent'",
                                 (report_id,)) == 1

    async def submit(self, report_id: int, body: Mapping[str, Any], now: float) -> bool:
        """Fix the body of an intent; False when the row is unknown or no longer an intent."""
        return await self._write(
            "UPDATE report_outbox SET state='pending', body=?, pending_at=?, next_at=?"
            " WHERE id=? AND state='intent'", (_dumps(body), now, now, report_id)) == 1

    async def release(self, job_id: str | None, now: float) -> int:
        """Turn unsubmitted intents (of one job, or all) into pending failure reports."""
        sql = ("UPDATE report_outbox SET state='pending', body=failure_body, pending_at=?,"
               " next_at=? WHERE state='intent'")
        if job_id is None:
            return await self._write(sql, (now, now))
        # A write, not a read first: queued behind the job's own intent, it sees that intent
        # even when the job was cancelled while the intent's commit was still waiting. (The
        # outbox asks only for jobs that recorded an intent; an UPDATE that changes nothing
        # adds nothing to the group commit it joins.)
        return await self._write(sql + " AND job_id=?", (now, now, job_id))

    # -- delivery bookkeeping beyond the shared (SqliteDeliveryTable) ----------------------

    async def retry_now(self, report_id: int, now: float) -> bool:
        """Make a report due now: a pending one keeps its deadline, an abandoned one becomes
        pending with a fresh deadline. False when the row is unknown, an intent or delivered."""
        return await self._write(
            "UPDATE report_outbox SET next_at=?, pending_at=CASE WHEN state='abandoned'"
            " THEN ? ELSE pending_at END, state='pending' WHERE id=?"
            " AND state IN ('pending','abandoned')", (now, now, report_id)) == 1

    # -- queries -------------------------------------------------------------------------

    async def latest_for_job(self, job_id: str) -> OutboxRow | None:
        rows = await self._rows("job_id=? ORDER BY id DESC LIMIT 1", (job_id,))
        return rows[0] if rows else None

    async def list_reports(self, states: Sequence[str], limit: int,
                           before_id: int | None = None) -> list[OutboxRow]:
        """Reports in ``states``, newest first; ``before_id`` is the paging cursor."""
        marks = ",".join("?" * len(states))
        cursor = "" if before_id is None else " AND id < ?"
        args = (*states, *(() if before_id is None else (before_id,)), limit)
        return await self._rows(f"state IN ({marks}){cursor} ORDER BY id DESC LIMIT ?", args)

    def delivering(self) -> bool:
        """One host owns this file: it may always send."""
        return True

