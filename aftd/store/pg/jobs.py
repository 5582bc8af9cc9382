"""The fleet's job store in PostgreSQL: jobs, logs and idempotency keys shared by every host.

Queued jobs are taken with ``FOR UPDATE SKIP LOCKED`` by the host that has every tag the job
requires; the claim records the host and its lease epoch, and every later write of the job's
state checks both (a host whose lease was taken over changes nothing). A new job is announced
with ``NOTIFY aftd_jobs``; a cancel of a job running elsewhere sets ``cancel_requested`` and
sends ``NOTIFY aftd_cancel`` to the host that runs it. The counts by state are refreshed in
the background, so health and metrics never wait on the database.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg
import structlog

from aftd.jobs.model import Job, JobState, Progress
from aftd.jobs.store import IdempotencyConflict, params_key, same_request
from aftd.store.base import CancelRequest
from aftd.store.errors import StoreError
from aftd.store.pg.db import Db
from aftd.store.pg.lease import Lease
from aftd.store.pg.refresh import Refresher

__all__ = ["CANCEL_CHANNEL", "JOBS_CHANNEL", "PgJobStore"]

log = structlog.get_logger("aftd.store")

JOBS_CHANNEL = "aftd_jobs"
CANCEL_CHANNEL = "aftd_cancel"
FULL_RECOUNT_EVERY = 15  # refresh intervals

_COLS = ("seq, id, script_id, params, status, created_at, started_at, finished_at, exit_code, "
         "error, idempotency_key, files_done, files_total, bytes_done, bytes_total, timeout_s, "
         "host_tags, host_id, trigger")


class PgJobStore:
    """:class:`aftd.store.base.JobStorage` on PostgreSQL, plus the fleet's claim and cancel."""

    def __init__(self, db: Db, lease: Lease) -> None:
        self._db = db
        self._lease = lease
        self._counts: dict[str, int] = {str(s): 0 for s in JobState}
        self._refresher = Refresher("aftd-store-counts", self._refresh)

    async def open(self) -> None:
        await self.recount()
        self._refresher.start()

    async def close(self) -> None:
        await self._refresher.stop()

    async def ping(self) -> bool:
        try:
            await self._db.fetchval("SELECT 1")
        except StoreError:
            return False
        return True

    # -- counts --------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        return dict(self._counts)

    async def recount(self) -> None:
        rows = await self._db.fetch("SELECT status, COUNT(*) FROM jobs GROUP BY status")
        counts = {str(s): 0 for s in JobState}
        counts.update({str(r[0]): int(r[1]) for r in rows})
        self._counts = counts

    async def _recount_active(self) -> None:
        rows = await self._db.fetch("SELECT status, COUNT(*) FROM jobs WHERE status IN"
                                    " ('queued', 'running') GROUP BY status")
        counts = dict(self._counts)
        counts.update({str(JobState.QUEUED): 0, str(JobState.RUNNING): 0})
        counts.update({str(r[0]): int(r[1]) for r in rows})
        self._counts = counts

    async def _refresh(self, n: int) -> None:
        """Queued and running jobs every few seconds (an index scan); every state, a table
        scan, less often."""
        await (self.recount() if n % FULL_RECOUNT_EVERY == 0 else self._recount_active())

    # -- jobs ----------------------------------------------------------------------------------
    async def create(self, job: Job) -> tuple[Job, bool]:
        async def work(c: asyncpg.Connection) -> tuple[Job, bool]:
            seq = await c.fetchval(
                "INSERT INTO jobs (id, script_id, params, status, created_at, idempotency_key,"
                " timeout_s, host_tags, trigger) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                " ON CONFLICT (idempotency_key) DO NOTHING RETURNING seq",
                job.id, job.script_id, params_key(job.params), str(job.status), job.created_at,
                job.idempotency_key, job.timeout_s, sorted(job.host_tags), job.trigger)
            if seq is None:
                row = await c.fetchrow(f"SELECT {_COLS} FROM jobs WHERE idempotency_key = $1",  # noqa: S608
                                       job.idempotency_key)
                existing = _row_to_job(row)
                if not same_request(existing, job):
                    raise IdempotencyConflict(job.idempotency_key)
                return existing, False
            await c.execute("SELECT pg_notify($1, $2)", JOBS_CHANNEL, job.id)
            job.seq = int(seq)
            return job, True
        result = await self._db.tx(work)
        if result[1]:
            self._counts[str(JobState.QUEUED)] = self._counts.get(str(JobState.QUEUED), 0) + 1
        return result

    async def get(self, job_id: str) -> Job | None:
        row = await self._db.fetchrow(f"SELECT {_COLS} FROM jobs WHERE id = $1", job_id)  # noqa: S608
        return _row_to_job(row) if row else None

    async def list_jobs(self, *, status: Sequence[str] = (), script_id: str | None = None,
                        limit: int = 50, before_seq: int | None = None,
                        trigger: str | None = None) -> list[Job]:
        where: list[str] = []
        args: list[Any] = []
        if status:
            args.append(list(status))
            where.append(f"status = ANY(${len(args)}::text[])")
        if script_id is not None:
            args.append(script_id)
            where.append(f"script_id = ${len(args)}")
        if trigger is not None:
            args.append(trigger)
            where.append(f"trigger = ${len(args)}")
        if before_seq is not None:
            args.append(before_seq)
            where.append(f"seq < ${len(args)}")
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        args.append(limit)
        rows = await self._db.fetch(
            f"SELECT {_COLS} FROM jobs {clause} ORDER BY seq DESC LIMIT ${len(args)}", *args)  # noqa: S608
        return [_row_to_job(r) for r in rows]

    async def claim(self, limit: int, now: float) -> list[Job]:
        """Take up to ``limit`` queued jobs this host has the tags for, oldest first."""
        lease = self._lease
        rows = await self._db.fetch(
            f"WITH picked AS (SELECT id FROM jobs WHERE status = 'queued' AND host_tags <@ $1"  # noqa: S608
            " ORDER BY seq LIMIT $2 FOR UPDATE SKIP LOCKED)"
            " UPDATE jobs j SET status = 'running', started_at = $3, host_id = $4,"
            " host_epoch = $5 FROM picked WHERE j.id = picked.id"
            f" RETURNING {', '.join('j.' + c.strip() for c in _COLS.split(','))}",
            list(lease.tags), limit, now, lease.host_id, lease.epoch)
        jobs = sorted((_row_to_job(r) for r in rows), key=lambda j: j.seq)
        return jobs

    async def set_running(self, job_id: str, started_at: float) -> None:
        await self._db.execute(
            "UPDATE jobs SET status = 'running', started_at = $2, host_id = $3, host_epoch = $4"
            " WHERE id = $1 AND status = 'queued'", job_id, started_at, self._lease.host_id,
            self._lease.epoch)

    async def finish(self, job: Job) -> None:
        p = job.progress
        lease = self._lease
        done = await self._db.execute(
            "UPDATE jobs SET status = $2, finished_at = $3, exit_code = $4, error = $5,"
            " files_done = $6, files_total = $7, bytes_done = $8, bytes_total = $9"
            " WHERE id = $1 AND status IN ('queued', 'running')"
            " AND (host_id IS NULL OR (host_id = $10 AND host_epoch = $11))",
            job.id, str(job.status), job.finished_at, job.exit_code, job.error, p.files_done,
            p.files_total, p.bytes_done, p.bytes_total, lease.host_id, lease.epoch)
        if done.endswith(" 0"):
            log.warning("job_state_fenced", job_id=job.id, status=str(job.status),
                        note="the job's record was settled by another host (lease taken over)")

    async def save_progress(self, jobs: Iterable[Job]) -> None:
        lease = self._lease
        rows = [(j.id, j.progress.files_done, j.progress.files_total, j.progress.bytes_done,
                 j.progress.bytes_total, lease.host_id, lease.epoch) for j in jobs]
        if rows:
            await self._db.run(lambda c: c.executemany(
                "UPDATE jobs SET files_done = $2, files_total = $3, bytes_done = $4,"
                " bytes_total = $5 WHERE id = $1 AND status = 'running' AND host_id = $6"
                " AND host_epoch = $7", rows))

    async def interrupt_running(self, now: float, reason: str) -> list[str]:
        """This host's jobs left running (a fleet host settles its own at registration)."""
        rows = await self._db.fetch(
            "UPDATE jobs SET status = 'interrupted', finished_at = $2,"
            " error = COALESCE(error, $3) WHERE status = 'running' AND host_id = $1 RETURNING id",
            self._lease.host_id, now, reason)
        return [str(r[0]) for r in rows]

    async def queued_ids(self) -> list[str]:
        rows = await self._db.fetch("SELECT id FROM jobs WHERE status = 'queued' ORDER BY seq")
        return [str(r[0]) for r in rows]

    async def request_cancel(self, job_id: str, now: float) -> CancelRequest:
        """Cancel a queued job here and now, or ask the host that runs it."""
        async def work(c: asyncpg.Connection) -> CancelRequest:
            row = await c.fetchrow(
                f"UPDATE jobs SET status = 'cancelled', finished_at = $2,"  # noqa: S608
                f" error = 'cancelled before it started' WHERE id = $1 AND status = 'queued'"
                f" RETURNING {_COLS}", job_id, now)
            if row is not None:
                return CancelRequest("cancelled", _row_to_job(row))
            row = await c.fetchrow(
                "UPDATE jobs SET cancel_requested = TRUE WHERE id = $1 AND status = 'running'"
                " RETURNING host_id", job_id)
            if row is not None:
                await c.execute("SELECT pg_notify($1, $2)", CANCEL_CHANNEL, job_id)
                return CancelRequest("requested", host=row[0])
            found = await c.fetchrow(f"SELECT {_COLS} FROM jobs WHERE id = $1", job_id)  # noqa: S608
            if found is None:
                return CancelRequest("unknown")
            return CancelRequest("finished", _row_to_job(found))
        return await self._db.tx(work)

    async def cancel_requested(self) -> list[str]:
        """This host's running jobs someone asked to cancel (a NOTIFY may have been missed)."""
        rows = await self._db.fetch(
            "SELECT id FROM jobs WHERE status = 'running' AND host_id = $1 AND host_epoch = $2"
            " AND cancel_requested", self._lease.host_id, self._lease.epoch)
        return [str(r[0]) for r in rows]

    async def prune(self, finished_before: float) -> int:
        async def work(c: asyncpg.Connection) -> int:
            await c.execute("DELETE FROM job_logs WHERE job_id IN (SELECT id FROM jobs WHERE"
                            " finished_at IS NOT NULL AND finished_at < $1)", finished_before)
            done = await c.execute("DELETE FROM jobs WHERE finished_at IS NOT NULL AND"
                                   " finished_at < $1", finished_before)
            return int(done.split()[-1])
        n = await self._db.tx(work)
        if n:
            await self.recount()
        return n

    # -- logs ----------------------------------------------------------------------------------
    async def append_logs(self, job_id: str, entries: Sequence[tuple[int, dict[str, Any]]],
                          keep: int) -> None:
        if not entries:
            return
        rows = [(job_id, seq, json.dumps(e, default=str)) for seq, e in entries]
        last = entries[-1][0]

        async def work(c: asyncpg.Connection) -> None:
            await c.executemany(
                "INSERT INTO job_logs (job_id, seq, entry) VALUES ($1, $2, $3)"
                " ON CONFLICT (job_id, seq) DO UPDATE SET entry = EXCLUDED.entry", rows)
            if last > keep:
                await c.execute("DELETE FROM job_logs WHERE job_id = $1 AND seq <= $2",
                                job_id, last - keep)
        await self._db.tx(work)

    async def logs(self, job_id: str, after_seq: int = 0,
                   limit: int = 10_000) -> list[dict[str, Any]]:
        rows = await self._db.fetch(
            "SELECT seq, entry FROM job_logs WHERE job_id = $1 AND seq > $2 ORDER BY seq"
            " LIMIT $3", job_id, after_seq, limit)
        out = []
        for seq, entry in rows:
            item = json.loads(entry)
            item["seq"] = int(seq)
            out.append(item)
        return out

    async def last_log_seq(self, job_id: str) -> int:
        value = await self._db.fetchval("SELECT MAX(seq) FROM job_logs WHERE job_id = $1",
                                        job_id)
        return int(value or 0)


def _row_to_job(row: Any) -> Job:
    return Job(
        seq=int(row[0]), id=row[1], script_id=row[2], params=json.loads(row[3]),
        status=JobState(row[4]), created_at=row[5], started_at=row[6], finished_at=row[7],
        exit_code=row[8], error=row[9], idempotency_key=row[10],
        progress=Progress(files_done=row[11], files_total=row[12], bytes_done=row[13],
                          bytes_total=row[14]),
        timeout_s=row[15], host_tags=tuple(row[16] or ()), host=row[17], trigger=row[18],
    )
