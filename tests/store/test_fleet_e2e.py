"""Three real daemons on loopback sharing one PostgreSQL database and one orchestrator."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import pytest

from aftd.store.pg.migrate import latest_version
from tests.fixtures.orchestrator import Orchestrator
from tests.fixtures.postgres import PostgresServer
from tests.fixtures.waiting import wait_until
from tests.store.fleet import FleetOf, migrate_cli

TERMINAL = ("succeeded", "failed", "cancelled", "interrupted")


async def _fleet(root: Path, pg: PostgresServer, orch: Orchestrator, db: str, n: int = 3,
                 **kw: object) -> FleetOf:
    fleet = FleetOf(root, pg, orch, db, **kw)  # type: ignore[arg-type]
    fleet.build(n)
    done = migrate_cli(fleet.daemons[0])
    assert done.returncode == 0, done.stderr
    await fleet.start()
    return fleet


async def test_a_daemon_refuses_an_unmigrated_database(tmp_path: Path, postgres: PostgresServer,
                                                        orch: Orchestrator,
                                                        fleet_db: str) -> None:
    fleet = FleetOf(tmp_path, postgres, orch, fleet_db)
    fleet.build(1)
    d = fleet.daemons[0]
    with pytest.raises(RuntimeError, match="exited"):
        await d.start()
    assert f"run `aftd db migrate --config {d.config_path}` first" in d.logs()
    done = migrate_cli(d)
    assert done.returncode == 0, done.stderr
    assert f"schema version {latest_version()} (migrated)" in done.stdout, done.stdout
    assert "up to date" in migrate_cli(d).stdout
    await d.start()
    await fleet.close()


async def test_any_host_answers_for_any_job(tmp_path: Path, postgres: PostgresServer,
                                            orch: Orchestrator, fleet_db: str) -> None:
    fleet = await _fleet(tmp_path, postgres, orch, fleet_db,
                         tags=[["zone:eu"], ["zone:eu"], ["zone:eu", "vfs:archive"]])
    a, b, c = fleet.apis
    try:
        # An Idempotency-Key holds fleet-wide: a retry on another host gets the same job.
        key = {"Idempotency-Key": "fleet-key-1"}
        s1, j1 = await a.trigger("sleeper", {"sleep": 0}, headers=key)
        s2, j2 = await b.trigger("sleeper", {"sleep": 0}, headers=key)
        assert (s1, s2) == (201, 200) and j1["jobId"] == j2["jobId"]
        s3, _ = await c.trigger("sleeper", {"sleep": 1}, headers=key)
        assert s3 == 409
        done = await c.wait_job(j1["jobId"])
        assert done["status"] == "succeeded" and done["host"] in ("h0", "h1", "h2")
        # Tags: only h2 has vfs:archive (REQUIRES_TAGS in the script, or hostTags).
        for _ in range(3):
            _, tagged = await a.trigger("archive_only")
            _, posted = await b.request("POST", "/v1/jobs", json={
                "scriptId": "sleeper", "hostTags": ["vfs:archive"]})
            for job_id in (tagged["jobId"], posted["jobId"]):
                job = await a.wait_job(job_id)
                assert job["host"] == "h2" and job["hostTags"] == ["vfs:archive"], job
        status, body = await a.request("POST", "/v1/jobs", json={
            "scriptId": "sleeper", "hostTags": ["bad tag"]})
        assert status == 400 and "hostTags" in body["error"]["message"]
        # A cancel sent to any host reaches the host that runs the job; its log is everywhere.
        _, long = await a.trigger("sleeper", {"sleep": 60})
        await wait_until(lambda: _running(a, long["jobId"]), 30, "the job to start")
        for api in (a, b, c):
            await wait_until(lambda api=api: _logged(api, long["jobId"], "sleeping"), 30,
                             "the running job's log line")
        runner = (await a.job(long["jobId"]))["host"]
        other = next(api for api, h in zip(fleet.apis, ("h0", "h1", "h2"), strict=True)
                     if h != runner)
        status, cancelled = await other.request("POST", f"/v1/jobs/{long['jobId']}/cancel")
        assert status == 200 and cancelled["status"] == "cancelled", cancelled
        status, again = await c.request("POST", f"/v1/jobs/{long['jobId']}/cancel")
        assert status == 409, again
        listed = await b.request("GET", "/v1/jobs?limit=100")
        assert {j["jobId"] for j in listed[1]["jobs"]} >= {j1["jobId"], long["jobId"]}
        async with c.session.get(f"{c.daemon.url}/v1/jobs/{long['jobId']}/log?follow=true",
                                 headers=c.headers(), ssl=c.daemon.ssl_context()) as r:
            lines = [json.loads(x) for x in (await r.read()).splitlines()]
        assert any(x["event"] == "sleeping" for x in lines)
    finally:
        await fleet.close()


async def _logged(api: object, job_id: str, event: str) -> bool:
    status, log = await api.request("GET", f"/v1/jobs/{job_id}/log")  # type: ignore[attr-defined]
    assert status == 200, log
    return any(x["event"] == event for x in log["lines"])


async def _running(api: object, job_id: str) -> bool:
    job = await api.job(job_id)  # type: ignore[attr-defined]
    return bool(job["status"] == "running")


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_300_workflows_one_host_killed(tmp_path: Path, postgres: PostgresServer,
                                            orch: Orchestrator, fleet_db: str) -> None:
    """300 claim-transfer-report workflows triggered round-robin on three daemons; one daemon
    is SIGKILLed half-way and never comes back: every claim gets its one report."""
    fleet = await _fleet(tmp_path, postgres, orch, fleet_db)
    n = 300
    names = [f"wf-{i:03d}" for i in range(n)]
    for name in names:
        fleet.add_workflow(name)
    live = list(range(3))
    aftd_jobs: dict[str, str] = {}
    killed_at = 0.0
    released: set[str] = set()
    try:
        sem = asyncio.Semaphore(12)

        async def trigger(i: int, name: str, again: str = "") -> None:
            async with sem:
                for attempt in range(20):
                    api = fleet.apis[live[(i + attempt) % len(live)]]
                    try:
                        status, body = await api.trigger(
                            "claim_transfer_report", {"job_id": name},
                            headers={"Idempotency-Key": f"trigger-{name}{again}"})
                    except OSError:
                        continue  # the host died under this request: retry elsewhere
                    if status in (200, 201):
                        aftd_jobs[name] = body["jobId"]
                        return
                    await asyncio.sleep(0.2)
                raise AssertionError(f"{name} could not be triggered")

        await asyncio.gather(*(trigger(i, name) for i, name in enumerate(names[:n // 2])))
        fleet.daemons[1].signal(signal.SIGKILL)
        fleet.daemons[1].proc.wait(10)  # type: ignore[union-attr]
        killed_at = time.monotonic()
        live.remove(1)
        await asyncio.gather(*(trigger(i, name) for i, name in enumerate(names[n // 2:])))

        def settled() -> bool:
            return all(orch.claims(x) == 0 or orch.reports(x) for x in names)
        api = fleet.apis[0]

        async def all_terminal() -> bool:
            _, body = await api.request("GET", "/v1/jobs?status=queued,running&limit=1")
            return not body["jobs"]
        await wait_until(all_terminal, 120, "every job to end")
        await wait_until(settled, 120, "a report for every claim")

        async def none_owed() -> bool:
            _, body = await api.request("GET", "/v1/reports?state=pending&limit=1")
            return not body["reports"]
        # Intents the killed host left are released as reports too: wait for their delivery.
        await wait_until(none_owed, 120, "every pending report of the fleet to be delivered")
        # Jobs the dead host took but never claimed at the orchestrator (it died first) are
        # triggered again, as an orchestrator would after its claim timeout. Some of them have
        # a "failed" report: the intent recorded before the claim left is released by the
        # host that takes over, since nobody can know whether the claim arrived.
        unclaimed = [x for x in names if orch.claims(x) == 0]
        released = {x for x in unclaimed if orch.reports(x)}
        assert all(r["status"] == "failed" for x in released for r in orch.reports(x))

        def done(x: str) -> bool:
            return bool(orch.claims(x)) and len(orch.reports(x)) == 1 + (x in released)
        await asyncio.gather(*(trigger(i, x, "-again") for i, x in enumerate(unclaimed)))
        try:
            await wait_until(lambda: all(done(x) for x in names),
                             120, "claims and reports of the triggered-again workflows")
        except AssertionError:
            states = [(x, orch.claims(x), len(orch.reports(x)),
                       (await api.job(aftd_jobs[x]))) for x in names if not done(x)]
            lost = [d.logs().count('"host_lease_lost"') for d in fleet.daemons]
            raise AssertionError(f"triggered again, not settled: {states}; leases lost per "
                                 f"host (a loaded machine): {lost}") from None
        _, gone = await api.request("GET", "/v1/jobs?status=interrupted&limit=1000")
        interrupted = len(gone["jobs"])
        assert all(j["host"] == "h1" for j in gone["jobs"])
    finally:
        await fleet.close()
    claimed = [x for x in names if orch.claims(x) > 0]
    assert len(claimed) == n, f"unclaimed: {sorted(set(names) - set(claimed))}"
    assert all(orch.claims(x) == 1 for x in names), "a workflow was claimed twice"
    for x in names:
        assert len(orch.reports(x)) == 1 + (x in released), (x, orch.reports(x))
    # No report was accepted twice, except one whose delivery was in flight on the killed host.
    for attempt in orch.state.attempts:
        if attempt.answered == 200 and orch.accepted(str(attempt.key)) > 1:
            firsts = [a.at for a in orch.state.attempts if a.key == attempt.key]
            assert min(firsts) <= killed_at, f"report {attempt.key} delivered twice"
    bodies = [orch.reports(x)[-1]["status"] for x in names]
    twice = {str(a.key) for a in orch.state.attempts if orch.accepted(str(a.key)) > 1}
    print(f"fleet: {interrupted} jobs interrupted on the killed host, {bodies.count('failed')} "
          f"failed reports, {len(unclaimed)} triggered again ({len(released)} "
          f"after a released intent), {len(twice)} reports accepted "
          "twice (in flight at the kill)")
    assert bodies.count("completed") >= n - 20, bodies.count("completed")


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_database_down_20s_loses_no_report(tmp_path: Path, postgres: PostgresServer,
                                                 orch: Orchestrator, fleet_db: str) -> None:
    """PostgreSQL stops while transfers run: they finish, new triggers get 503, final reports
    wait in each host's local spool, and all of them are delivered once it is back."""
    fleet = await _fleet(tmp_path, postgres, orch, fleet_db)
    gate = tmp_path / "gate"
    names = [f"out-{i:02d}" for i in range(15)]
    try:
        jobs = {}
        for i, name in enumerate(names):
            fleet.add_workflow(name)
            status, body = await fleet.apis[i % 3].trigger(
                "gated", {"job_id": name, "gate": str(gate)})
            assert status == 201, body
            jobs[name] = body["jobId"]
        await wait_until(lambda: all(orch.claims(x) == 1 for x in names), 60, "every claim")
        stopped = time.monotonic()
        postgres.stop()
        try:
            gate.touch()  # the transfers finish while the database is down
            await wait_until(lambda: all((fleet.dst / "in" / f"{x}.dat").exists()
                                         for x in names), 60, "every transfer")
            for api in fleet.apis:
                fleet.add_workflow("during-outage")
                status, body = await api.trigger("claim_transfer_report",
                                                 {"job_id": "during-outage"})
                assert status == 503 and body["error"]["code"] == "store_unavailable", body
            await asyncio.sleep(max(0.0, 20 - (time.monotonic() - stopped)))
            assert not any(orch.reports(x) for x in names)  # nobody could deliver
            spooled = sum(d.logs().count('"outbox_spooling"') for d in fleet.daemons)
            assert spooled >= 1
        finally:
            postgres.start()
        await wait_until(lambda: all(orch.reports(x) for x in names), 120,
                         "every report after the outage")
        for name in names:
            assert orch.reports(name) == [{"jobId": name, "status": "completed",
                                           "agent": "aftd"}], orch.reports(name)
            job = await fleet.apis[0].wait_job(jobs[name], timeout=60)
            assert job["status"] == "succeeded", job
        # The fleet works again: a new workflow runs and reports.
        fleet.add_workflow("after")
        status, body = await fleet.apis[1].trigger("claim_transfer_report", {"job_id": "after"})
        assert status == 201, body
        await wait_until(lambda: bool(orch.reports("after")), 60, "the report after the outage")
    finally:
        await fleet.close()
    for name in names:
        assert len(orch.reports(name)) == 1
