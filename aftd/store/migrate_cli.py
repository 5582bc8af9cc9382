"""``aftd db migrate``: bring the fleet database's schema to this aftd's version."""

from __future__ import annotations

import asyncio
from typing import TextIO

from aftd.config import Config
from aftd.errors import AftdError
from aftd.secrets.chain import SecretChain
from aftd.store.errors import StoreError
from aftd.store.factory import database_password

__all__ = ["run_migrate"]


def run_migrate(cfg: Config, out: TextIO, err: TextIO) -> int:
    if not cfg.store.fleet:
        print(f"{cfg.source}: store.url is empty: the SQLite store in paths.state_dir "
              "upgrades itself at start-up; nothing to migrate", file=out)
        return 0
    try:
        applied, version = asyncio.run(_migrate(cfg))
    except (AftdError, StoreError) as exc:
        print(f"aftd: db migrate failed: {exc}", file=err)
        return 1
    for mig in applied:
        print(f"applied migration {mig[0]:04d}: {mig[1]}", file=out)
    print(f"schema version {version} ({'up to date' if not applied else 'migrated'})", file=out)
    return 0


async def _migrate(cfg: Config) -> tuple[list[tuple[int, str]], int]:
    from aftd.store.pg.db import Db
    from aftd.store.pg.migrate import current_version, migrate

    secrets = SecretChain(cfg.secrets)
    await secrets.start()
    try:
        password = await database_password(cfg, secrets)
    finally:
        await secrets.aclose()
    db = Db(cfg.store.url, password, size=2)
    try:
        applied = await migrate(db)
        return [(m.version, m.description) for m in applied], await current_version(db)
    finally:
        await db.close()
