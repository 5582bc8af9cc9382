"""Fixtures of the store tests: one real PostgreSQL server for the session (a fresh, migrated
database per test), the stores of both backends behind the same interface, and for the fleet
tests an orchestrator and an empty database of their own."""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # make `tests.fixtures` importable

from aftd.store.pg.db import Db
from aftd.store.pg.hosts import register
from aftd.store.pg.lease import Lease
from aftd.store.pg.migrate import migrate
from tests.fixtures.orchestrator import Orchestrator
from tests.fixtures.postgres import PostgresServer


async def fresh_db(server: PostgresServer, *, migrated: bool = True) -> Db:
    """A new empty database on ``server`` (migrated unless told otherwise)."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    server.create_database(name)
    db = Db(server.url.rsplit("/", 1)[0] + f"/{name}", server.password, size=4)
    if migrated:
        await migrate(db)
    return db


@pytest.fixture
async def orch() -> AsyncIterator[Orchestrator]:
    o = Orchestrator(token="orch-fleet-token-0123")
    await o.start()
    yield o
    await o.stop()


@pytest.fixture
def fleet_db(postgres: PostgresServer) -> str:
    name = f"f_{uuid.uuid4().hex[:12]}"
    postgres.create_database(name)
    return name


@pytest.fixture
async def pg_db(postgres: PostgresServer) -> AsyncIterator[Db]:
    db = await fresh_db(postgres)
    yield db
    await db.close()


@pytest.fixture
def make_lease(pg_db: Db) -> Callable[..., Any]:
    async def make(host_id: str = "h1", tags: tuple[str, ...] = (),
                   lease_s: float = 3.0) -> Lease:
        lease = Lease(host_id, tags, lease_s)
        await register(pg_db, lease)
        return lease
    return make
