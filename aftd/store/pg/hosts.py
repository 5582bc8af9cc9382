"""Host leases in PostgreSQL: register, heartbeat, and take over a host that went silent.

A host's row holds its lease epoch and its last heartbeat (the database's clock). Registering
bumps the epoch, so whatever the host's previous process left is settled like a takeover. A
live host that finds another host silent past that host's ``lease_s`` takes it over in one
transaction (``FOR UPDATE SKIP LOCKED``: two live hosts never take over the same one): the
silent host's running jobs become ``interrupted``, its unsubmitted report intents become
``failed`` reports, and every open report row and pending notification it owned moves to the
live host, which delivers them with their original Idempotency-Keys. The silent host's epoch
is bumped, so if it comes back, its heartbeat fails and every write it still tries is fenced
off.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import asyncpg
import structlog

from aftd.errors import AftdError
from aftd.store.pg.db import Db
from aftd.store.pg.lease import Lease

__all__ = ["HostIdInUse", "Takeover", "heartbeat", "register", "take_over_silent",
           "unregister"]

log = structlog.get_logger("aftd.fleet")

_DB_NOW = "extract(epoch from clock_timestamp())::double precision"


class HostIdInUse(AftdError):
    """Another live daemon heartbeats under this host id."""


@dataclass(frozen=True)
class Takeover:
    host_id: str
    jobs_interrupted: list[str]
    intents_released: int
    reports_moved: int
    notifications_moved: int = 0


async def _settle(c: asyncpg.Connection, silent: str, lease: Lease, reason: str, *,
                  release: bool = True) -> Takeover:
    """Move what ``silent`` left to ``lease``'s host (inside the caller's transaction): its
    running jobs become interrupted, its intents failure reports (unless ``release`` is false:
    a restarting host first replays its local spool, then releases), its open rows are moved."""
    rows = await c.fetch(
        f"UPDATE jobs SET status = 'interrupted', finished_at = {_DB_NOW},"  # noqa: S608
        " error = COALESCE(error, $2) WHERE status = 'running' AND host_id = $1"
        " AND (host_id <> $3 OR host_epoch < $4) RETURNING id",
        silent, reason, lease.host_id, lease.epoch)
    released = "UPDATE 0"
    if release:
        released = await c.execute(
            f"UPDATE report_outbox SET state = 'pending', body = failure_body,"  # noqa: S608
            f" pending_at = {_DB_NOW}, next_at = {_DB_NOW} WHERE owner = $1"
            " AND state = 'intent'", silent)
    moved = await c.execute(
        "UPDATE report_outbox SET owner = $2, owner_epoch = $3 WHERE owner = $1"
        " AND state IN ('intent', 'pending')", silent, lease.host_id, lease.epoch)
    # Notifications ([[notify]]) it owed, and the intents of its jobs (the live host announces
    # how the jobs ended: interrupted).
    notified = await c.execute(
        "UPDATE notify_outbox SET owner = $2, owner_epoch = $3 WHERE owner = $1"
        " AND state = 'pending'", silent, lease.host_id, lease.epoch)
    await c.execute("UPDATE notify_intents SET owner = $2 WHERE owner = $1", silent,
                    lease.host_id)
    return Takeover(silent, [str(r[0]) for r in rows], int(released.split()[-1]),
                    int(moved.split()[-1]), int(notified.split()[-1]))


async def register(db: Db, lease: Lease) -> Takeover | None:
    """Take this host's lease with a new epoch; settle what its previous process left. Waits
    (at most one lease) for a previous process's lease to lapse; a lease still being renewed
    then means another live daemon uses this host id: :class:`HostIdInUse`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + lease.lease_s * 1.5 + 2
    seen: float | None = None
    while True:
        row = await db.fetchrow(
            f"SELECT heartbeat_at, lease_s, {_DB_NOW} AS now FROM hosts WHERE host_id = $1",  # noqa: S608
            lease.host_id)
        if row is None or row["heartbeat_at"] is None or \
                row["now"] - row["heartbeat_at"] >= row["lease_s"]:
            break
        if seen is not None and row["heartbeat_at"] != seen and loop.time() > deadline:
            raise HostIdInUse(f"host id {lease.host_id!r} is in use by another live aftd (it "
                              "renews its lease); give each host its own [host] id")
        if seen is None:
            log.warning("host_lease_wait", host_id=lease.host_id,
                        note="a previous process's lease must lapse first")
        seen = row["heartbeat_at"]
        await asyncio.sleep(min(1.0, lease.lease_s / 3))
    return await db.tx(lambda c: _register(c, lease))


async def _register(c: asyncpg.Connection, lease: Lease) -> Takeover | None:
    sent = lease.now()
    epoch = await c.fetchval(
        f"INSERT INTO hosts (host_id, epoch, tags, lease_s, heartbeat_at, started_at)"  # noqa: S608
        f" VALUES ($1, 1, $2, $3, {_DB_NOW}, {_DB_NOW}) ON CONFLICT (host_id) DO UPDATE SET"
        f" epoch = hosts.epoch + 1, tags = $2, lease_s = $3, heartbeat_at = {_DB_NOW},"
        f" started_at = {_DB_NOW}, taken_over_by = NULL, taken_over_at = NULL RETURNING epoch",
        lease.host_id, list(lease.tags), lease.lease_s)
    lease.epoch, lease.lost = int(epoch), False
    lease.renewed(sent)
    done = await _settle(c, lease.host_id, lease,
                         "the daemon stopped while the job ran (its host restarted)",
                         release=False)
    return done if done.jobs_interrupted or done.reports_moved else None


async def heartbeat(db: Db, lease: Lease) -> bool:
    """Renew the lease; False when it was taken over (the host must let go of its work)."""
    sent = lease.now()
    done = await db.execute(
        f"UPDATE hosts SET heartbeat_at = {_DB_NOW} WHERE host_id = $1 AND epoch = $2",  # noqa: S608
        lease.host_id, lease.epoch)
    if done.endswith(" 0"):
        lease.lost = True
        lease.renewed_at = lease.up_since = None
        return False
    lease.renewed(sent)
    return True


async def take_over_silent(db: Db, lease: Lease) -> list[Takeover]:
    """Take over every other host silent past its lease (each in its own transaction)."""
    done: list[Takeover] = []
    while True:
        one = await db.tx(lambda c: _take_over_one(c, lease))
        if one is None:
            return done
        done.append(one)


async def _take_over_one(c: asyncpg.Connection, lease: Lease) -> Takeover | None:
    row = await c.fetchrow(
        f"SELECT host_id, heartbeat_at FROM hosts WHERE host_id <> $1"  # noqa: S608
        f" AND heartbeat_at IS NOT NULL AND heartbeat_at < {_DB_NOW} - lease_s"
        " ORDER BY heartbeat_at LIMIT 1 FOR UPDATE SKIP LOCKED", lease.host_id)
    if row is None:
        return None
    silent = str(row["host_id"])
    mine = await c.fetchval("SELECT 1 FROM hosts WHERE host_id = $1 AND epoch = $2",
                            lease.host_id, lease.epoch)
    if not mine:  # this host's own lease is gone: it takes nothing over
        return None
    result = await _settle(c, silent, lease,
                           f"host {silent} stopped renewing its lease while the job ran")
    await c.execute(
        f"UPDATE hosts SET epoch = epoch + 1, heartbeat_at = NULL, taken_over_by = $2,"  # noqa: S608
        f" taken_over_at = {_DB_NOW} WHERE host_id = $1", silent, lease.host_id)
    return result


async def unregister(db: Db, lease: Lease) -> None:
    """A clean stop: mark the lease lapsed, so a live host delivers what is left right away."""
    await db.execute("UPDATE hosts SET heartbeat_at = 0 WHERE host_id = $1 AND epoch = $2",
                     lease.host_id, lease.epoch)
