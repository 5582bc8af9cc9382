"""The durable job store: SQLite (WAL) in ``state_dir``.

Calls are synchronous and short (single-row statements on an indexed table in WAL mode with
``synchronous=NORMAL``): a committed transaction survives a kill of the process, which is the
failure the invariants are about. Log lines are written in batches by the runner.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from aftd.jobs.model import Job, JobState, Progress

__all__ = ["IdempotencyConflict", "JobStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    script_id TEXT NOT NULL,
    params TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    exit_code INTEGER,
    error TEXT,
    idempotency_key TEXT UNIQUE,
    files_done INTEGER NOT NULL DEFAULT 0,
    files_total INTEGER NOT NULL DEFAULT 0,
    bytes_done INTEGER NOT NULL DEFAULT 0,
    bytes_total INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, seq);
CREATE INDEX IF NOT EXISTS jobs_script ON jobs(script_id, seq);
CREATE TABLE IF NOT EXISTS job_logs (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    entry TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
"""

_COLS = ("seq, id, script_id, params, status, created_at, started_at, finished_at, exit_code, "
         "error, idempotency_key, files_done, files_total, bytes_done, bytes_total")


class IdempotencyConflict(Exception):
    """An Idempotency-Key was reused for a different request."""


def open_db(path: Path) -> sqlite3.Connection:
    """A connection configured the way every aftd table expects (WAL, busy timeout)."""
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False,
                           timeout=10.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


class JobStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = open_db(path)
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def ping(self) -> bool:
        """True while the database answers (the watchdog's health check)."""
        try:
            self._db.execute("SELECT 1").fetchone()
        except sqlite3.Error:
            return False
        return True

    # -- jobs ---------------------------------------------------------------------------------
    def create(self, job: Job) -> tuple[Job, bool]:
        """Insert a new job; with an idempotency key already used, return that job instead."""
        if job.idempotency_key is not None:
            existing = self._by_idempotency(job.idempotency_key)
            if existing is not None:
                if existing.script_id != job.script_id or existing.params != job.params:
                    raise IdempotencyConflict(job.idempotency_key)
                return existing, False
        cur = self._db.execute(
            "INSERT INTO jobs (id, script_id, params, status, created_at, idempotency_key) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (job.id, job.script_id, json.dumps(job.params), str(job.status), job.created_at,
             job.idempotency_key),
        )
        job.seq = int(cur.lastrowid or 0)
        return job, True

    def _by_idempotency(self, key: str) -> Job | None:
        row = self._db.execute(f"SELECT {_COLS} FROM jobs WHERE idempotency_key = ?",  # noqa: S608
                               (key,)).fetchone()
        return _row_to_job(row) if row else None

    def get(self, job_id: str) -> Job | None:
        row = self._db.execute(f"SELECT {_COLS} FROM jobs WHERE id = ?",  # noqa: S608
                               (job_id,)).fetchone()
        return _row_to_job(row) if row else None

    def list_jobs(self, *, status: Sequence[str] = (), script_id: str | None = None,
             limit: int = 50, before_seq: int | None = None) -> list[Job]:
        """Newest first; ``before_seq`` is the paging cursor."""
        where: list[str] = []
        args: list[Any] = []
        if status:
            where.append(f"status IN ({','.join('?' * len(status))})")
            args.extend(status)
        if script_id is not None:
            where.append("script_id = ?")
            args.append(script_id)
        if before_seq is not None:
            where.append("seq < ?")
            args.append(before_seq)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._db.execute(
            f"SELECT {_COLS} FROM jobs {clause} ORDER BY seq DESC LIMIT ?",  # noqa: S608
            (*args, limit),
        ).fetchall()
        return [_row_to_job(r) for r in rows]

    def set_running(self, job_id: str, started_at: float) -> None:
        self._db.execute("UPDATE jobs SET status = ?, started_at = ? WHERE id = ?",
                         (str(JobState.RUNNING), started_at, job_id))

    def finish(self, job: Job) -> None:
        p = job.progress
        self._db.execute(
            "UPDATE jobs SET status = ?, finished_at = ?, exit_code = ?, error = ?, "
            "files_done = ?, files_total = ?, bytes_done = ?, bytes_total = ? WHERE id = ?",
            (str(job.status), job.finished_at, job.exit_code, job.error, p.files_done,
             p.files_total, p.bytes_done, p.bytes_total, job.id),
        )

    def save_progress(self, jobs: Iterable[Job]) -> None:
        rows = [(j.progress.files_done, j.progress.files_total, j.progress.bytes_done,
                 j.progress.bytes_total, j.id) for j in jobs]
        if rows:
            self._db.executemany(
                "UPDATE jobs SET files_done = ?, files_total = ?, bytes_done = ?, "
                "bytes_total = ? WHERE id = ?", rows)

    def interrupt_running(self, now: float, reason: str) -> list[str]:
        """At start-up: jobs the previous process left running were interrupted."""
        ids = [r[0] for r in self._db.execute(
            "SELECT id FROM jobs WHERE status = ?", (str(JobState.RUNNING),))]
        self._db.execute(
            "UPDATE jobs SET status = ?, finished_at = ?, error = COALESCE(error, ?) "
            "WHERE status = ?",
            (str(JobState.INTERRUPTED), now, reason, str(JobState.RUNNING)))
        return ids

    def queued(self) -> list[Job]:
        rows = self._db.execute(f"SELECT {_COLS} FROM jobs WHERE status = ? ORDER BY seq",  # noqa: S608
                                (str(JobState.QUEUED),)).fetchall()
        return [_row_to_job(r) for r in rows]

    def counts(self) -> dict[str, int]:
        rows = self._db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
        counts = {str(s): 0 for s in JobState}
        counts.update({r[0]: r[1] for r in rows})
        return counts

    def prune(self, finished_before: float) -> int:
        """Delete finished jobs (and their logs) older than the retention horizon."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "DELETE FROM job_logs WHERE job_id IN (SELECT id FROM jobs WHERE "
                "finished_at IS NOT NULL AND finished_at < ?)", (finished_before,))
            cur = self._db.execute(
                "DELETE FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ?",
                (finished_before,))
        return cur.rowcount

    # -- logs ---------------------------------------------------------------------------------
    def append_logs(self, job_id: str, entries: Sequence[tuple[int, dict[str, Any]]],
                    keep: int) -> None:
        """Store log entries (seq, entry) and drop the oldest beyond ``keep`` lines."""
        if not entries:
            return
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO job_logs (job_id, seq, entry) VALUES (?, ?, ?)",
                [(job_id, seq, json.dumps(e, default=str)) for seq, e in entries])
            last = entries[-1][0]
            if last > keep:
                self._db.execute("DELETE FROM job_logs WHERE job_id = ? AND seq <= ?",
                                 (job_id, last - keep))

    def logs(self, job_id: str, after_seq: int = 0, limit: int = 10_000) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT seq, entry FROM job_logs WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (job_id, after_seq, limit)).fetchall()
        out = []
        for seq, entry in rows:
            item = json.loads(entry)
            item["seq"] = seq
            out.append(item)
        return out

    def last_log_seq(self, job_id: str) -> int:
        row = self._db.execute("SELECT MAX(seq) FROM job_logs WHERE job_id = ?",
                               (job_id,)).fetchone()
        return int(row[0] or 0)


def _row_to_job(row: Sequence[Any]) -> Job:
    return Job(
        seq=row[0], id=row[1], script_id=row[2], params=json.loads(row[3]),
        status=JobState(row[4]), created_at=row[5], started_at=row[6], finished_at=row[7],
        exit_code=row[8], error=row[9], idempotency_key=row[10],
        progress=Progress(files_done=row[11], files_total=row[12], bytes_done=row[13],
                          bytes_total=row[14]),
    )
