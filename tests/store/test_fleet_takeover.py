"""A host cut off from the fleet (SIGSTOP: as silent as a network cut) is taken over by a live
host, which delivers its reports once with their Idempotency-Keys; when the host comes back
(SIGCONT) it finds its lease gone and delivers nothing again."""

from __future__ import annotations

import signal
from datetime import datetime
from pathlib import Path

import pytest

from tests.fixtures.orchestrator import Orchestrator
from tests.fixtures.postgres import PostgresServer
from tests.fixtures.waiting import wait_until
from tests.store.fleet import FleetOf, migrate_cli
from tests.triggers.helpers import wait_status, watch

ONLY_H1 = ["only:h1"]


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_a_host_back_from_a_cut_does_not_deliver_again(
        tmp_path: Path, postgres: PostgresServer, orch: Orchestrator, fleet_db: str) -> None:
    fleet = FleetOf(tmp_path, postgres, orch, fleet_db, tags=[[], ONLY_H1])
    gate = tmp_path / "gate"
    # A watch whose job runs on h1 (and waits for the gate there).
    fleet.build(2, extra=watch("hw", "src", path="hw", script="gated", poll_s=0.3,
                               stable_s=0.3, params={"job_id": "watched", "gate": str(gate)})
                + 'host_tags = ["only:h1"]\n')
    (fleet.src / "hw").mkdir()
    assert migrate_cli(fleet.daemons[0]).returncode == 0
    await fleet.start()
    a = fleet.apis[0]
    h1 = fleet.daemons[1]
    stopped = False
    try:
        fleet.add_workflow("pending")
        fleet.add_workflow("held")
        fleet.add_workflow("watched")
        (fleet.src / "hw" / "w.dat").write_text("watched")
        orch.fail_reports(10**6)  # the report of "pending" stays pending on h1
        _, p = await a.request("POST", "/v1/jobs", json={
            "scriptId": "claim_transfer_report", "params": {"job_id": "pending"},
            "hostTags": ONLY_H1})
        _, g = await a.request("POST", "/v1/jobs", json={
            "scriptId": "gated", "params": {"job_id": "held", "gate": str(gate)},
            "hostTags": ONLY_H1})
        await wait_until(lambda: len(orch.report_attempts("pending")) >= 1, 60,
                         "a refused attempt of the pending report")
        await wait_until(lambda: orch.claims("held") == 1 and orch.claims("watched") == 1, 60,
                         "the held jobs' claims")
        h1.signal(signal.SIGSTOP)
        stopped = True

        async def interrupted() -> bool:
            return (await a.job(g["jobId"]))["status"] == "interrupted"
        await wait_until(interrupted, 60, "h0 to take h1 over")
        orch.fail_reports(0)
        await wait_until(lambda: orch.reports("pending") and orch.reports("held"), 60,
                         "h0 to deliver h1's reports")
        assert (await a.job(p["jobId"]))["report"]["state"] == "delivered"
        # The watch's fire failed with its interrupted job: it is listed, to be retried.
        await wait_status(a, "hw", lambda st: st["failedCount"] == 1)
        gate.touch()  # h1's job would finish now, if it still ran
        h1.signal(signal.SIGCONT)
        stopped = False
        await wait_until(lambda: h1.logs().count('"host_registered"') >= 2, 60,
                         "h1 to find its lease taken and register again")
        # h1 works again: a job only it can run runs and reports.
        fleet.add_workflow("after")
        await a.request("POST", "/v1/jobs", json={
            "scriptId": "claim_transfer_report", "params": {"job_id": "after"},
            "hostTags": ONLY_H1})
        await wait_until(lambda: bool(orch.reports("after")), 60, "h1's next report")
    finally:
        if stopped:
            h1.signal(signal.SIGCONT)
        await fleet.close()
    assert '"host_lease_lost"' in h1.logs()
    assert orch.reports("pending") == [{"jobId": "pending", "status": "completed",
                                        "agent": "aftd"}]
    assert orch.reports("held") == [{"jobId": "held", "status": "failed", "agent": "aftd"}]
    assert orch.reports("watched") == [{"jobId": "watched", "status": "failed",
                                        "agent": "aftd"}]
    for job in ("pending", "held", "watched"):
        keys = orch.state.keys_by_job[job]
        assert len(keys) == 1 and orch.accepted(keys[0]) == 1, (job, keys)


async def test_max_concurrent_holds_per_host(tmp_path: Path, postgres: PostgresServer,
                                             orch: Orchestrator, fleet_db: str) -> None:
    """Two hosts with jobs.max_concurrent = 2 share a queue of 8 jobs: on each host, at most
    two of them overlap in time (from the jobs' own start and end)."""
    fleet = FleetOf(tmp_path, postgres, orch, fleet_db, max_concurrent=2)
    fleet.build(2)
    assert migrate_cli(fleet.daemons[0]).returncode == 0
    await fleet.start()
    a = fleet.apis[0]
    try:
        ids = [(await a.trigger("sleeper", {"sleep": 1.5}))[1]["jobId"] for _ in range(8)]
        jobs = [await a.wait_job(i, timeout=120) for i in ids]
    finally:
        await fleet.close()
    assert all(j["status"] == "succeeded" for j in jobs), jobs
    spans: dict[str, list[tuple[float, float]]] = {}
    for j in jobs:
        spans.setdefault(j["host"], []).append((_t(j["startedAt"]), _t(j["finishedAt"])))
    peak = {host: _overlap(s) for host, s in spans.items()}
    assert max(peak.values()) <= 2, (peak, spans)
    assert set(spans) == {"h0", "h1"}, spans  # the queue was shared


def _t(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _overlap(spans: list[tuple[float, float]]) -> int:
    """The most spans open at one instant (an end and a start at the same time do not
    overlap)."""
    events = sorted([(end, -1) for _, end in spans] + [(start, 1) for start, _ in spans])
    peak = n = 0
    for _, step in events:
        n += step
        peak = max(peak, n)
    return peak
