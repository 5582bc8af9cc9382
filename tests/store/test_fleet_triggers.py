"""Schedules and watches in a fleet of three real daemons on one PostgreSQL database: each due
time and each file version fires one job for the whole fleet, whichever host claims it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.fixtures.daemon import Api
from tests.fixtures.orchestrator import Orchestrator
from tests.fixtures.postgres import PostgresServer
from tests.fixtures.waiting import wait_until
from tests.store.fleet import FleetOf, migrate_cli
from tests.triggers.helpers import jobs_of, schedule, wait_status, watch


@pytest.fixture
async def orch() -> Orchestrator:
    return Orchestrator(token="orch-fleet-token-0123")  # unused: the record script sends nothing


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_a_schedule_and_a_watch_fire_once_for_the_fleet(
        tmp_path: Path, postgres: PostgresServer, orch: Orchestrator, fleet_db: str) -> None:
    fleet = FleetOf(tmp_path, postgres, orch, fleet_db, tags=[[], [], ["vfs:archive"]])
    # The three hosts watch one directory (on this machine: one local VFS root for all, as a
    # shared mount would be) and run two schedules, one of them for h2 only (host_tags).
    fleet.build(3, extra=schedule("tick", script="record", every_s=1)
                + watch("drop", "src", path="drop", script="record", poll_s=0.3, stable_s=0.3)
                + schedule("archived", script="record", every_s=1)
                + 'host_tags = ["vfs:archive"]\n')
    drop = fleet.src / "drop"
    drop.mkdir()
    assert migrate_cli(fleet.daemons[0]).returncode == 0
    await fleet.start()
    api = fleet.apis[0]
    try:
        for i in range(30):
            (drop / f"f{i:02d}.csv").write_text(f"file {i}")

        async def fired() -> bool:
            ticks = [j for j in await jobs_of(api, "tick") if j["status"] == "succeeded"]
            files = [j for j in await jobs_of(api, "drop") if j["status"] == "succeeded"]
            archived = [j for j in await jobs_of(api, "archived") if j["status"] == "succeeded"]
            return len(ticks) >= 8 and len(files) >= 30 and len(archived) >= 3
        await wait_until(fired, 120, "8 ticks, 30 files and 3 tagged ticks fired")
        for name in ("tick", "drop", "archived"):
            await fleet.apis[1].request("POST", f"/v1/triggers/{name}/pause")
        ticks = await jobs_of(fleet.apis[2], "tick")
        files = await jobs_of(fleet.apis[1], "drop")
        archived = await jobs_of(fleet.apis[0], "archived")
    finally:
        await fleet.close()
    due = Counter(j["params"]["scheduledAt"] for j in ticks)
    assert due and max(due.values()) == 1, f"a due time fired twice: {due.most_common(3)}"
    paths = Counter(j["params"]["path"] for j in files)
    assert set(paths) == {f"drop/f{i:02d}.csv" for i in range(30)}
    assert max(paths.values()) == 1, f"a file fired twice: {paths.most_common(3)}"
    ran = {j["host"] for j in archived if j["status"] == "succeeded"}
    assert ran == {"h2"} and all(j["hostTags"] == ["vfs:archive"] for j in archived), archived
    hosts = Counter(j["host"] for j in ticks + files)
    print(f"fleet triggers: {len(due)} due times, {len(paths)} files, ran on {dict(hosts)}")


async def test_a_pause_holds_for_the_whole_fleet(tmp_path: Path, postgres: PostgresServer,
                                                  orch: Orchestrator, fleet_db: str) -> None:
    fleet = FleetOf(tmp_path, postgres, orch, fleet_db)
    fleet.build(2, extra=schedule("tick", script="record", every_s=1))
    assert migrate_cli(fleet.daemons[0]).returncode == 0
    await fleet.start()
    try:
        status, _ = await fleet.apis[0].request("POST", "/v1/triggers/tick/pause")
        assert status == 200
        # The other host follows the pause, and reads it from the store after a restart.
        await wait_status(fleet.apis[1], "tick", lambda st: st["state"] == "paused")
        fleet.daemons[1].stop()
        await fleet.daemons[1].start(timeout=60)
        await wait_status(fleet.apis[1], "tick", lambda st: st["state"] == "paused")
        before = {j["jobId"] for j in await jobs_of(fleet.apis[0], "tick")}
        status, _ = await fleet.apis[1].request("POST", "/v1/triggers/tick/resume")
        assert status == 200
        await wait_status(fleet.apis[0], "tick", lambda st: st["state"] == "active")
        await wait_until(lambda: _more(fleet.apis[0], before), 60, "a tick after the resume")
    finally:
        await fleet.close()


async def _more(api: Api, before: set[str]) -> bool:
    return bool({j["jobId"] for j in await jobs_of(api, "tick")} - before)
