"""Many workflows at once through the real daemon: their job-store and outbox writes share
transactions (group commit). A kill -9 right after the API showed their outcome loses none of
it: every job keeps the state the API showed, and every report is delivered exactly once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aftd.report.workflow import idempotency_key
from tests.fixtures.daemon import Api
from tests.fixtures.orchestrator import Orchestrator
from tests.report.e2e import daemon_for, wait_delivered

MakeDaemon = Callable[..., Any]
N = 40


async def _trigger(api: Api, o: str) -> str:
    status, body = await api.trigger("claim_transfer_report", [{"name": "job_id", "value": o}])
    assert status == 201, body
    return str(body["jobId"])


async def _ended_with_pending_report(api: Api, job_id: str,
                                     timeout: float = 120.0) -> dict[str, Any]:
    """Poll until the API shows the job ended and its report's body fixed (pending)."""
    deadline = time.monotonic() + timeout
    while True:
        job = await api.job(job_id)
        report = job.get("report") or {}
        if job["status"] not in ("queued", "running") and report.get("state") == "pending":
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id}: {job['status']}, report {report}")
        await asyncio.sleep(0.1)


@pytest.mark.slow
async def test_kill9_after_group_commits_loses_nothing_the_api_showed(
        make_daemon: MakeDaemon, orch: Orchestrator, tmp_path: Path) -> None:
    d, src, dst = await daemon_for(make_daemon, orch, tmp_path)
    names = [f"o{i}" for i in range(N)]
    for o in names:
        (src / f"{o}.dat").write_bytes(o.encode() * 100)
        orch.add_job(o)
    orch.fail_reports(10**6)  # every delivery attempt gets 503: the reports stay pending
    api = Api(d)
    try:
        # Triggered at once: the creates, starts, intents and reports queue up together.
        ids = await asyncio.gather(*(_trigger(api, o) for o in names))
        shown = [await _ended_with_pending_report(api, job_id) for job_id in ids]
        d.kill9()
    finally:
        await api.close()
    assert all(job["status"] == "succeeded" for job in shown), [j["status"] for j in shown]
    orch.fail_reports(0)
    await d.start()
    api = Api(d)
    try:
        after = [await wait_delivered(api, job_id, timeout=120) for job_id in ids]
    finally:
        await api.close()
    for before, job in zip(shown, after, strict=True):
        assert (job["status"], job["exitCode"]) == (before["status"], before["exitCode"])
        assert job["report"]["reportId"] == before["report"]["reportId"]
        assert job["report"]["state"] == "delivered"
    for o, job_id in zip(names, ids, strict=True):
        assert (dst / "in" / f"{o}.dat").read_bytes() == o.encode() * 100
        assert orch.reports(o) == [{"jobId": o, "status": "completed", "agent": "aftd"}]
        assert orch.accepted(idempotency_key(job_id, o)) == 1
        assert orch.claims(o) == 1
