"""Versioned schema migrations of the fleet store: SQL files in this package, applied in order
by ``aftd db migrate``, recorded in ``schema_version``. A daemon checks the version at start-up
and refuses a schema it does not know (older or newer), saying what to run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

from aftd.store.errors import SchemaMismatch
from aftd.store.pg.db import Db

__all__ = ["Migration", "current_version", "latest_version", "migrate", "migrations",
           "require_current"]

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Two hosts migrating at once: the second waits for the first, then finds nothing to do.
_ADVISORY_KEY = 0x61667464  # "aftd"

_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version     INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
)"""


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sql: str


def migrations() -> list[Migration]:
    """The migrations shipped in ``aftd/store/pg/migrations``, oldest first."""
    found = []
    for entry in resources.files("aftd.store.pg").joinpath("migrations").iterdir():
        m = _NAME.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2).replace("_", " "),
                                   entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda mig: mig.version)


def latest_version() -> int:
    return max((m.version for m in migrations()), default=0)


async def current_version(db: Db) -> int:
    """The newest applied version; 0 for a database never migrated."""
    async def read(conn: asyncpg.Connection) -> int:
        exists = await conn.fetchval("SELECT to_regclass('schema_version') IS NOT NULL")
        if not exists:
            return 0
        return int(await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version"))
    return await db.run(read)


async def migrate(db: Db) -> list[Migration]:
    """Apply what is missing, each migration in its own transaction; what was applied."""
    applied: list[Migration] = []
    for mig in migrations():
        async def step(conn: asyncpg.Connection, mig: Migration = mig) -> bool:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _ADVISORY_KEY)
            await conn.execute(_VERSION_TABLE)
            done = await conn.fetchval("SELECT 1 FROM schema_version WHERE version = $1",
                                       mig.version)
            if done:
                return False
            await conn.execute(mig.sql)
            await conn.execute("INSERT INTO schema_version (version, description) "
                               "VALUES ($1, $2)", mig.version, mig.description)
            return True
        if await db.tx(step):
            applied.append(mig)
    return applied


async def require_current(db: Db, config_hint: str) -> int:
    """The schema version, or :class:`SchemaMismatch` with what to do about it."""
    have, want = await current_version(db), latest_version()
    if have == want:
        return have
    if have < want:
        what = "has no aftd schema" if have == 0 else f"has schema version {have}"
        raise SchemaMismatch(f"the fleet database {what}; this aftd needs version {want}: run "
                             f"`aftd db migrate{config_hint}` first")
    raise SchemaMismatch(f"the fleet database has schema version {have}, newer than this aftd "
                         f"knows ({want}): upgrade aftd on this host")
