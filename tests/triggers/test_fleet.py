"""Triggers on a fleet host: a job the trigger fired runs on another host (the script needs a
tag only that host has), and the trigger still learns how it ended — its ``after`` step runs
on success, a failure shows in its failed files."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fixtures.orchestrator import Orchestrator
from tests.fixtures.postgres import PostgresServer
from tests.fixtures.waiting import wait_until
from tests.store.fleet import FleetOf, migrate_cli
from tests.triggers.helpers import wait_status, watch

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

# Both run only on a host tagged vfs:archive; the second fails.
ARCHIVE_FAILS = '''
REQUIRES_TAGS = ["vfs:archive"]

async def main(job):
    return 4
'''


@pytest.fixture
async def orch() -> AsyncIterator[Orchestrator]:
    o = Orchestrator(token="orch-trigger-fleet-token")
    await o.start()
    yield o
    await o.stop()


async def test_a_job_run_by_another_host_ends_the_fire_on_the_host_that_fired_it(
        tmp_path: Path, postgres: PostgresServer, orch: Orchestrator) -> None:
    database = f"t_{uuid.uuid4().hex[:12]}"
    postgres.create_database(database)
    fleet = FleetOf(tmp_path, postgres, orch, database, tags=[[], ["vfs:archive"]])
    fleet.build(2)
    for d in fleet.daemons:
        d.write_script("archive_fails", ARCHIVE_FAILS)
    h0 = fleet.daemons[0]
    for sub in ("ok", "bad"):
        (fleet.src / "drop" / sub).mkdir(parents=True)
    h0.config_path.write_text(
        h0.config_path.read_text()
        + watch("ok", "src", path="drop/ok", script="archive_only", after="delete")
        + watch("bad", "src", path="drop/bad", script="archive_fails", after="delete"))
    done = migrate_cli(h0)
    assert done.returncode == 0, done.stderr
    await fleet.start()
    api0 = fleet.apis[0]
    try:
        good, bad = fleet.src / "drop" / "ok" / "a.csv", fleet.src / "drop" / "bad" / "b.csv"
        good.write_text("a")
        bad.write_text("b")
        # h0 fired it, h1 ran it, h0 deleted the file: it learned of the success.
        await wait_until(lambda: not good.exists(), 90, "the after step on h0")
        status, page = await api0.request("GET", "/v1/jobs?trigger=ok")
        assert status == 200
        [job] = page["jobs"]
        assert (job["status"], (await api0.job(job["jobId"]))["host"]) == ("succeeded", "h1")
        st = await wait_status(api0, "bad", lambda s: s["failedFiles"], timeout=90)
        [failed] = st["failedFiles"]
        assert failed["path"] == "drop/bad/b.csv" and "job failed" in failed["error"]
        assert bad.exists()  # a failed job leaves the file
    finally:
        await fleet.close()
