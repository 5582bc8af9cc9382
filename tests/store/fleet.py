"""A fleet of real daemons on loopback sharing one PostgreSQL database and one orchestrator."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.fixtures.daemon import Api, DaemonProcess
from tests.fixtures.orchestrator import Orchestrator
from tests.fixtures.postgres import PostgresServer
from tests.report.e2e import BUNDLED, GATED

__all__ = ["FleetOf", "migrate_cli"]

SLEEPER = '''
import asyncio

async def main(job):
    job.log.info("sleeping", seconds=job.params.get("sleep", 0))
    await asyncio.sleep(float(job.params.get("sleep", 0)))
    return 0
'''

RECORD = '''
async def main(job):
    job.log.info("fired", **dict(job.params))
    return 0
'''

ARCHIVE_ONLY = '''
"""Runs only where the archive VFS exists."""
REQUIRES_TAGS = ["vfs:archive"]

async def main(job):
    return 0
'''


def migrate_cli(daemon: DaemonProcess) -> subprocess.CompletedProcess[str]:
    """``aftd db migrate`` with the daemon's config and environment (its secrets)."""
    return subprocess.run([sys.executable, "-m", "aftd.cli.aftd_main", "db", "migrate",
                           "--config", str(daemon.config_path)], capture_output=True, text=True,
                          timeout=60, check=False, env=daemon.env)


@dataclass
class FleetOf:
    """``n`` daemons (``h0``..) with local VFS ``src``/``dst`` shared on this machine."""

    root: Path
    pg: PostgresServer
    orch: Orchestrator
    database: str
    # Short for quick takeovers, yet long enough that a heartbeat delayed by a loaded 2-core
    # machine does not make the live hosts take each other over.
    lease_s: float = 5.0
    tags: Sequence[Sequence[str]] = ()
    max_concurrent: int = 16
    daemons: list[DaemonProcess] = field(default_factory=list)
    apis: list[Api] = field(default_factory=list)

    @property
    def src(self) -> Path:
        return self.root / "src"

    @property
    def dst(self) -> Path:
        return self.root / "dst"

    def build(self, n: int, *, extra: str = "") -> None:
        (self.dst / "in").mkdir(parents=True, exist_ok=True)
        self.src.mkdir(parents=True, exist_ok=True)
        store = self.pg.store_options(self.database)
        for i in range(n):
            tags = list(self.tags[i]) if i < len(self.tags) else []
            config = f"""
[store]
url = "{store['url']}"
password_secret = "{store['password_secret']}"
[host]
id = "h{i}"
tags = {tags!r}
lease_s = {self.lease_s}
[reports]
initial_backoff_s = 0.2
max_backoff_s = 1.0
[jobs]
shutdown_grace_s = 0.5
max_concurrent = {self.max_concurrent}
[vfs.src]
type = "local"
root = "{self.src}"
[vfs.dst]
type = "local"
root = "{self.dst}"
""".replace("'", '"') + extra
            d = DaemonProcess(self.root / f"h{i}", extra_config=config, scripts={
                "claim_transfer_report": BUNDLED, "gated": GATED, "sleeper": SLEEPER,
                "archive_only": ARCHIVE_ONLY, "record": RECORD},
                env={"AFTD_SECRET_ORCH_API_URL": self.orch.url,
                     "AFTD_SECRET_ORCH_API_TOKEN": self.orch.token,
                     "AFTD_SECRET_AFTD_DB_PASSWORD": self.pg.password})
            self.daemons.append(d)
            self.apis.append(Api(d))

    async def start(self) -> None:
        await asyncio.gather(*(d.start(timeout=60) for d in self.daemons))

    def add_workflow(self, orch_job: str, size: int = 64 << 10) -> None:
        (self.src / f"{orch_job}.dat").write_bytes(orch_job.encode() * (size // len(orch_job)))
        self.orch.add_job(orch_job)

    async def close(self) -> None:
        for api in self.apis:
            await api.close()
        for d in self.daemons:
            d.stop()


