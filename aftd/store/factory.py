"""Open the stores the config asks for: SQLite in ``state_dir`` (one host), or the fleet's
PostgreSQL database (with this host's lease and its local outbox spool)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from aftd.config import Config
from aftd.errors import AftdError
from aftd.jobs.store import JobStore
from aftd.report.store import OutboxStore
from aftd.secrets.base import SecretResolver
from aftd.store.base import JobClaims, JobStorage, OutboxStorage

__all__ = ["DB_NAME", "Fleet", "Stores", "open_stores"]

log = structlog.get_logger("aftd.store")

DB_NAME = "aftd.sqlite"


@dataclass
class Fleet:
    """The parts only a fleet host has."""

    db: Any  # aftd.store.pg.db.Db
    lease: Any  # aftd.store.pg.lease.Lease
    jobs: Any  # aftd.store.pg.jobs.PgJobStore
    spool: Any  # aftd.store.spool.SpooledOutbox


@dataclass
class Stores:
    jobs: JobStorage
    outbox: OutboxStorage  # not opened yet: the Outbox opens it
    claims: JobClaims | None = None
    fleet: Fleet | None = None

    async def close(self) -> None:
        await self.jobs.close()
        if self.fleet is not None:
            from aftd.store.pg.hosts import unregister

            with contextlib.suppress(OSError):
                await unregister(self.fleet.db, self.fleet.lease)
            await self.fleet.db.close()


async def open_stores(cfg: Config, secrets: SecretResolver, config_hint: str = "") -> Stores:
    """The stores, opened (the outbox's excepted); raises on an unusable store."""
    state_dir = cfg.paths.state_dir
    if not cfg.store.fleet:
        return await _open_sqlite(state_dir, cfg.store.busy_timeout_s)
    return await _open_fleet(cfg, secrets, config_hint)


async def _open_sqlite(state_dir: Path, busy: float) -> Stores:
    jobs = JobStore(state_dir / DB_NAME, busy_timeout_s=busy)
    await jobs.open()
    return Stores(jobs=jobs, outbox=OutboxStore(state_dir / DB_NAME, busy_timeout_s=busy))


async def database_password(cfg: Config, secrets: SecretResolver) -> str | None:
    name = cfg.store.password_secret
    if not name:
        return None
    try:
        return await secrets.get(name)
    except AftdError as exc:
        raise AftdError(f"store.password_secret: {exc}") from None


async def _open_fleet(cfg: Config, secrets: SecretResolver, config_hint: str) -> Stores:
    from aftd.store.pg.db import Db
    from aftd.store.pg.hosts import register
    from aftd.store.pg.jobs import PgJobStore
    from aftd.store.pg.lease import Lease
    from aftd.store.pg.migrate import require_current
    from aftd.store.pg.outbox import PgOutboxStore
    from aftd.store.spool import SPOOL_NAME, SpooledOutbox

    db = Db(cfg.store.url, await database_password(cfg, secrets), size=cfg.store.pool_size)
    try:
        await require_current(db, config_hint)
        lease = Lease(cfg.host.id, tuple(cfg.host.tags), cfg.host.lease_s)
        settled = await register(db, lease)
        log.info("host_registered", host_id=lease.host_id, epoch=lease.epoch,
                 tags=list(lease.tags), lease_s=lease.lease_s)
        if settled is not None:
            log.warning("host_previous_run_settled", jobs_interrupted=len(
                settled.jobs_interrupted), reports=settled.reports_moved)
        jobs = PgJobStore(db, lease)
        await jobs.open()
    except BaseException:
        await db.close()
        raise
    spool = SpooledOutbox(PgOutboxStore(db, lease), cfg.paths.state_dir / SPOOL_NAME)
    return Stores(jobs=jobs, outbox=spool, claims=jobs,
                  fleet=Fleet(db=db, lease=lease, jobs=jobs, spool=spool))
