"""The durable job store: SQLite (WAL) in ``state_dir``, kept off the event loop.

Two connections, each owned by a thread of its own (see :mod:`aftd.dbthread`): one writes, one
reads. In WAL mode readers never wait for a writer, so an outside holder of the write lock (a
backup, a ``sqlite3`` shell) delays writes only; job lookups, listings and logs keep answering.
The counts of jobs by state are kept in memory and adjusted after each committed write, so
health and metrics never touch the database. A committed transaction survives a kill of the
process (``synchronous=NORMAL`` in WAL): the crash the README's "Invariants" are stated against.
Writes that arrive together (jobs created, started, finished, log lines, progress) share one
transaction (group commit, :meth:`aftd.dbthread.DbThread.write`); each still returns only
once committed.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from aftd.dbthread import DbThread, connect, transaction
from aftd.jobs.model import Job, JobState, Progress

__all__ = ["IdempotencyConflict", "JobStore", "params_key", "same_request"]

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
    bytes_total INTEGER NOT NULL DEFAULT 0,
    timeout_s REAL,
    trigger TEXT
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

# Columns added after the first release: (name, declaration) for ALTER TABLE on old stores.
_MIGRATIONS = (("timeout_s", "REAL"), ("trigger", "TEXT"),
               ("host_tags", "TEXT NOT NULL DEFAULT '[]'"))
# Indexes on migrated columns: created after the columns exist.
_INDEXES = "CREATE INDEX IF NOT EXISTS jobs_trigger ON jobs(trigger, seq);"

_COLS = ("seq, id, script_id, params, status, created_at, started_at, finished_at, exit_code, "
         "error, idempotency_key, files_done, files_total, bytes_done, bytes_total, timeout_s, "
         "trigger, host_tags")

DEFAULT_BUSY_TIMEOUT_S = 10.0


class IdempotencyConflict(Exception):
    """An Idempotency-Key was reused for a different request."""


def same_request(existing: Job, job: Job) -> bool:
    """Whether a retried trigger asks for what the stored job was created with."""
    return (existing.script_id == job.script_id
            and params_key(existing.params) == params_key(job.params)
            and existing.timeout_s == job.timeout_s
            and existing.trigger == job.trigger
            and sorted(existing.host_tags) == sorted(job.host_tags))


def params_key(params: Any) -> str:
    """Params as canonical JSON: equal only for equal JSON types and values (1, 1.0 and true
    differ), independent of key order."""
    return json.dumps(params, sort_keys=True, separators=(",", ":"))


class JobStore:
    """Async access to the jobs and job_logs tables; see the module docstring."""

    def __init__(self, path: Path, *, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> None:
        self.path = path
        self._busy_timeout_s = busy_timeout_s
        self._w = DbThread("aftd-jobs-w")
        self._r = DbThread("aftd-jobs-r")
        self._counts: dict[str, int] = {str(s): 0 for s in JobState}

    async def open(self) -> None:
        """Create or upgrade the schema and load the counts (raises on an unusable store)."""
        await self._w.open(lambda: _open_writer(self.path, self._busy_timeout_s))
        await self._r.open(lambda: connect(self.path, busy_timeout_s=self._busy_timeout_s))
        await self.recount()

    async def close(self) -> None:
        await self._r.close()
        await self._w.close()

    async def ping(self) -> bool:
        """True while the database answers reads (the watchdog's health check)."""
        try:
            await self._r.run(lambda c: c.execute("SELECT 1").fetchone())
        except sqlite3.Error:
            return False
        return True

    # -- counts (in memory) -------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """Jobs by state, without touching the database."""
        return dict(self._counts)

    async def recount(self) -> None:
        rows = await self._r.run(
            lambda c: c.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall())
        counts = {str(s): 0 for s in JobState}
        counts.update({str(r[0]): int(r[1]) for r in rows})
        self._counts = counts

    def _moved(self, old: str | None, new: str, n: int = 1) -> None:
        if old is not None:
            self._counts[old] = max(0, self._counts.get(old, 0) - n)
        self._counts[new] = self._counts.get(new, 0) + n

    # -- jobs ---------------------------------------------------------------------------------
    async def create(self, job: Job) -> tuple[Job, bool]:
        """Insert a new job; with an idempotency key already used, return that job instead."""
        result = await self._w.write(lambda c: _create(c, job))
        if result[1]:
            self._moved(None, str(job.status))
        return result

    async def get(self, job_id: str) -> Job | None:
        row = await self._r.run(lambda c: c.execute(
            f"SELECT {_COLS} FROM jobs WHERE id = ?", (job_id,)).fetchone())  # noqa: S608
        return _row_to_job(row) if row else None

    async def list_jobs(self, *, status: Sequence[str] = (), script_id: str | None = None,
                        limit: int = 50, before_seq: int | None = None,
                        trigger: str | None = None) -> list[Job]:
        """Newest first; ``before_seq`` is the paging cursor; ``trigger`` keeps the jobs that
        trigger fired."""
        where: list[str] = []
        args: list[Any] = []
        if status:
            where.append(f"status IN ({','.join('?' * len(status))})")
            args.extend(status)
        if script_id is not None:
            where.append("script_id = ?")
            args.append(script_id)
        if trigger is not None:
            where.append("trigger = ?")
            args.append(trigger)
        if before_seq is not None:
            where.append("seq < ?")
            args.append(before_seq)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        sql = f"SELECT {_COLS} FROM jobs {clause} ORDER BY seq DESC LIMIT ?"  # noqa: S608
        rows = await self._r.run(lambda c: c.execute(sql, (*args, limit)).fetchall())
        return [_row_to_job(r) for r in rows]

    async def set_running(self, job_id: str, started_at: float) -> None:
        old = await self._w.write(lambda c: _update_status(
            c, job_id, "UPDATE jobs SET status = ?, started_at = ? WHERE id = ?",
            (str(JobState.RUNNING), started_at, job_id)))
        if old is not None:
            self._moved(old, str(JobState.RUNNING))

    async def finish(self, job: Job) -> None:
        p = job.progress
        args = (str(job.status), job.finished_at, job.exit_code, job.error, p.files_done,
                p.files_total, p.bytes_done, p.bytes_total, job.id)
        old = await self._w.write(lambda c: _update_status(
            c, job.id,
            "UPDATE jobs SET status = ?, finished_at = ?, exit_code = ?, error = ?, "
            "files_done = ?, files_total = ?, bytes_done = ?, bytes_total = ? WHERE id = ?",
            args))
        if old is not None and old != str(job.status):
            self._moved(old, str(job.status))

    async def save_progress(self, jobs: Iterable[Job]) -> None:
        rows = [(j.progress.files_done, j.progress.files_total, j.progress.bytes_done,
                 j.progress.bytes_total, j.id) for j in jobs]
        if rows:
            await self._w.write(lambda c: c.executemany(
                "UPDATE jobs SET files_done = ?, files_total = ?, bytes_done = ?, "
                "bytes_total = ? WHERE id = ?", rows))

    async def interrupt_running(self, now: float, reason: str) -> list[str]:
        """At start-up: jobs the previous process left running were interrupted."""
        ids = await self._w.run(lambda c: _interrupt_running(c, now, reason))
        self._moved(str(JobState.RUNNING), str(JobState.INTERRUPTED), len(ids))
        return ids

    async def queued_ids(self) -> list[str]:
        """Ids of queued jobs, oldest first (params stay in the store until a job starts)."""
        rows = await self._r.run(lambda c: c.execute(
            "SELECT id FROM jobs WHERE status = ? ORDER BY seq",
            (str(JobState.QUEUED),)).fetchall())
        return [str(r[0]) for r in rows]

    async def prune(self, finished_before: float) -> int:
        """Delete finished jobs (and their logs) older than the retention horizon."""
        n = await self._w.run(lambda c: _prune(c, finished_before))
        if n:
            await self.recount()
        return n

    # -- logs ---------------------------------------------------------------------------------
    async def append_logs(self, job_id: str, entries: Sequence[tuple[int, dict[str, Any]]],
                          keep: int) -> None:
        """Store log entries (seq, entry) and drop the oldest beyond ``keep`` lines."""
        if entries:
            rows = [(job_id, seq, json.dumps(e, default=str)) for seq, e in entries]
            last = entries[-1][0]
            await self._w.write(lambda c: _append_logs(c, job_id, rows, last, keep))

    async def logs(self, job_id: str, after_seq: int = 0,
                   limit: int = 10_000) -> list[dict[str, Any]]:
        rows = await self._r.run(lambda c: c.execute(
            "SELECT seq, entry FROM job_logs WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (job_id, after_seq, limit)).fetchall())
        out = []
        for seq, entry in rows:
            item = json.loads(entry)
            item["seq"] = seq
            out.append(item)
        return out

    async def last_log_seq(self, job_id: str) -> int:
        row = await self._r.run(lambda c: c.execute(
            "SELECT MAX(seq) FROM job_logs WHERE job_id = ?", (job_id,)).fetchone())
        return int(row[0] or 0)


# -- units of work (run in a connection's thread) ------------------------------------------------
def _open_writer(path: Path, busy_timeout_s: float) -> sqlite3.Connection:
    conn = connect(path, busy_timeout_s=busy_timeout_s)
    conn.executescript(_SCHEMA)
    have = {r[1] for r in conn.execute("PRAGMA table_info(jobs)")}
    for name, decl in _MIGRATIONS:
        if name not in have:
            conn.execute(f"ALTER TABLE jobs ADD COLUMN {name} {decl}")
    conn.executescript(_INDEXES)
    return conn


def _create(c: sqlite3.Connection, job: Job) -> tuple[Job, bool]:
    with transaction(c):
        if job.idempotency_key is not None:
            row = c.execute(f"SELECT {_COLS} FROM jobs WHERE idempotency_key = ?",  # noqa: S608
                            (job.idempotency_key,)).fetchone()
            if row is not None:
                existing = _row_to_job(row)
                if not same_request(existing, job):
                    raise IdempotencyConflict(job.idempotency_key)
                return existing, False
        cur = c.execute(
            "INSERT INTO jobs (id, script_id, params, status, created_at, idempotency_key, "
            "timeout_s, trigger, host_tags) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (job.id, job.script_id, params_key(job.params), str(job.status), job.created_at,
             job.idempotency_key, job.timeout_s, job.trigger, json.dumps(sorted(job.host_tags))))
    job.seq = int(cur.lastrowid or 0)
    return job, True


def _update_status(c: sqlite3.Connection, job_id: str, sql: str,
                   args: tuple[Any, ...]) -> str | None:
    """Run an UPDATE of one job's status; the status it had before (None if unknown)."""
    with transaction(c):
        row = c.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
        c.execute(sql, args)
    return None if row is None else str(row[0])


def _interrupt_running(c: sqlite3.Connection, now: float, reason: str) -> list[str]:
    with transaction(c):
        ids = [str(r[0]) for r in c.execute(
            "SELECT id FROM jobs WHERE status = ?", (str(JobState.RUNNING),))]
        c.execute(
            "UPDATE jobs SET status = ?, finished_at = ?, error = COALESCE(error, ?) "
            "WHERE status = ?",
            (str(JobState.INTERRUPTED), now, reason, str(JobState.RUNNING)))
    return ids


def _prune(c: sqlite3.Connection, finished_before: float) -> int:
    with transaction(c):
        c.execute("DELETE FROM job_logs WHERE job_id IN (SELECT id FROM jobs WHERE "
                  "finished_at IS NOT NULL AND finished_at < ?)", (finished_before,))
        cur = c.execute("DELETE FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ?",
                        (finished_before,))
    return cur.rowcount


def _append_logs(c: sqlite3.Connection, job_id: str, rows: list[tuple[str, int, str]],
                 last: int, keep: int) -> None:
    with transaction(c):
        c.executemany("INSERT OR REPLACE INTO job_logs (job_id, seq, entry) VALUES (?, ?, ?)",
                      rows)
        if last > keep:
            c.execute("DELETE FROM job_logs WHERE job_id = ? AND seq <= ?", (job_id, last - keep))


def _row_to_job(row: Sequence[Any]) -> Job:
    return Job(
        seq=row[0], id=row[1], script_id=row[2], params=json.loads(row[3]),
        status=JobState(row[4]), created_at=row[5], started_at=row[6], finished_at=row[7],
        exit_code=row[8], error=row[9], idempotency_key=row[10],
        progress=Progress(files_done=row[11], files_total=row[12], bytes_done=row[13],
                          bytes_total=row[14]),
        timeout_s=row[15], trigger=row[16], host_tags=tuple(json.loads(row[17] or "[]")),
    )
