"""SQLite persistence of the report outbox: one row per report owed to an orchestrator.

The outbox shares the job store's SQLite file but owns its own connection and table. Every write
commits with ``synchronous=FULL`` before returning, so a row survives ``kill -9`` and power loss:
the report it stands for is owed until a 2xx answer or the deadline.

Row states: ``intent`` (a claim succeeded; the final body is not known yet), ``pending`` (a body is
fixed and must be delivered), ``delivered`` and ``abandoned`` (final).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["OutboxRow", "OutboxStore"]

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

_COLUMNS = ("id, job_id, url, token_secret, idempotency_key, body, state, attempts, "
            "last_status, last_error, created_at, pending_at, next_at, delivered_at")


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
    return json.dumps(body, separators=(",", ":"), sort_keys=True)


class OutboxStore:
    """Synchronous, single-connection access to the ``report_outbox`` table."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so a write transaction
        # takes the lock up front instead of failing half-way against the job store's writer.
        self._db = sqlite3.connect(str(path), isolation_level=None, timeout=10.0)
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def _write(self, sql: str, args: tuple[Any, ...]) -> sqlite3.Cursor:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            cur = self._db.execute(sql, args)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return cur

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[OutboxRow]:
        return [OutboxRow(*r) for r in self._db.execute(sql, args).fetchall()]

    # -- creating and fixing reports -------------------------------------------------------

    def add_intent(self, job_id: str, url: str, token_secret: str | None,
                   failure_body: Mapping[str, Any], key: str, now: float) -> int:
        """Insert an intent; the same idempotency key twice is one report (the first row)."""
        self._write(
            "INSERT INTO report_outbox (job_id, url, token_secret, idempotency_key, failure_body,"
            " state, created_at) VALUES (?, ?, ?, ?, ?, 'intent', ?)"
            " ON CONFLICT (idempotency_key) DO NOTHING",
            (job_id, url, token_secret, key, _dumps(failure_body), now),
        )
        row = self._db.execute("SELECT id FROM report_outbox WHERE idempotency_key = ?",
                               (key,)).fetchone()
        return int(row[0])

    def submit(self, report_id: int, body: Mapping[str, Any], now: float) -> bool:
        """Fix the body of an intent; False when the row is unknown or no longer an intent."""
        cur = self._write(
            "UPDATE report_outbox SET state='pending', body=?, pending_at=?, next_at=?"
            " WHERE id=? AND state='intent'",
            (_dumps(body), now, now, report_id),
        )
        return cur.rowcount == 1

    def release(self, job_id: str | None, now: float) -> int:
        """Turn unsubmitted intents (of one job, or all) into pending failure reports."""
        sql = ("UPDATE report_outbox SET state='pending', body=failure_body, pending_at=?,"
               " next_at=? WHERE state='intent'")
        if job_id is None:
            cur = self._write(sql, (now, now))
        else:
            # Called at the end of every job; most have no open intent, and a read is far
            # cheaper than a durable (fsync-ed) empty write transaction.
            if self._db.execute("SELECT 1 FROM report_outbox WHERE job_id=? AND state='intent'"
                                " LIMIT 1", (job_id,)).fetchone() is None:
                return 0
            cur = self._write(sql + " AND job_id=?", (now, now, job_id))
        return cur.rowcount

    # -- delivery bookkeeping --------------------------------------------------------------

    def due(self, now: float, limit: int) -> list[OutboxRow]:
        return self._rows(
            f"SELECT {_COLUMNS} FROM report_outbox WHERE state='pending' AND next_at <= ?"  # noqa: S608
            " ORDER BY next_at LIMIT ?", (now, limit))

    def next_due_after(self, now: float) -> float | None:
        row = self._db.execute("SELECT MIN(next_at) FROM report_outbox"
                               " WHERE state='pending' AND next_at > ?", (now,)).fetchone()
        return None if row[0] is None else float(row[0])

    def retry_later(self, report_id: int, attempts: int, status: int | None, error: str | None,
                    next_at: float) -> None:
        self._write("UPDATE report_outbox SET attempts=?, last_status=?, last_error=?, next_at=?"
                    " WHERE id=? AND state='pending'",
                    (attempts, status, error, next_at, report_id))

    def finish(self, report_id: int, state: str, attempts: int, status: int | None,
               error: str | None, now: float) -> None:
        delivered_at = now if state == "delivered" else None
        self._write("UPDATE report_outbox SET state=?, attempts=?, last_status=?, last_error=?,"
                    " next_at=NULL, delivered_at=? WHERE id=? AND state='pending'",
                    (state, attempts, status, error, delivered_at, report_id))

    def prune(self, before: float) -> int:
        """Delete final rows (delivered, abandoned) created before ``before``."""
        cur = self._write("DELETE FROM report_outbox WHERE state IN ('delivered','abandoned')"
                          " AND created_at < ?", (before,))
        return cur.rowcount

    # -- queries -------------------------------------------------------------------------

    def latest_for_job(self, job_id: str) -> OutboxRow | None:
        rows = self._rows(f"SELECT {_COLUMNS} FROM report_outbox WHERE job_id=?"  # noqa: S608
                          " ORDER BY id DESC LIMIT 1", (job_id,))
        return rows[0] if rows else None

    def get(self, report_id: int) -> OutboxRow | None:
        rows = self._rows(f"SELECT {_COLUMNS} FROM report_outbox WHERE id=?",  # noqa: S608
                          (report_id,))
        return rows[0] if rows else None

    def count(self, state: str) -> int:
        row = self._db.execute("SELECT COUNT(*) FROM report_outbox WHERE state=?",
                               (state,)).fetchone()
        return int(row[0])

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(("intent", "pending", "delivered", "abandoned"), 0)
        for state, n in self._db.execute(
                "SELECT state, COUNT(*) FROM report_outbox GROUP BY state"):
            out[str(state)] = int(n)
        return out
