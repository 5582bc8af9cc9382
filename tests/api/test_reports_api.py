"""``GET /v1/reports`` and ``POST /v1/reports/{id}/retry`` against the real daemon and a real
orchestrator: pending and abandoned reports listed a page at a time, a retry that sends a
backed-off report at once and revives an abandoned one, with the same Idempotency-Key."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest

from tests.conftest import HELLO
from tests.fixtures.daemon import API_KEY, API_KEY_SHA256, Api, DaemonProcess
from tests.fixtures.orchestrator import Orchestrator

TOKEN = "orch-token-for-the-reports-api"
REPORTER = """
async def main(job):
    rid = await job.outbox.record_intent(
        job.id, url=job.params["url"], token_secret="orch-api-token",
        failure_body={"status": "failed"}, idempotency_key="k-" + job.id)
    await job.outbox.submit(rid, {"status": "completed", "jobId": job.id})
"""
MANAGER, READER = "key-reports-manager", "key-reports-reader"
KEYS = "".join(f'[[auth.api_keys]]\nname = "{n}"\nsha256 = "{d}"\n{extra}\n' for n, d, extra in (
    ("test", API_KEY_SHA256, ""),
    ("manager", hashlib.sha256(MANAGER.encode()).hexdigest(), 'scopes = ["reports:manage"]'),
    ("reader", hashlib.sha256(READER.encode()).hexdigest(), 'scopes = ["jobs:read"]')))
# A failed attempt is retried an hour later: only a retry brings it back sooner.
SLOW_RETRIES = "[reports]\ninitial_backoff_s = 3600\nmax_backoff_s = 3600\n"


@pytest.fixture
async def orch() -> AsyncIterator[Orchestrator]:
    o = Orchestrator(token=TOKEN)
    await o.start()
    yield o
    await o.stop()


@pytest.fixture
async def reports_daemon(make_daemon: Any) -> DaemonProcess:
    d: DaemonProcess = await make_daemon(
        scripts={"hello": HELLO, "reporter": REPORTER}, api_keys=KEYS, extra_config=SLOW_RETRIES,
        env={"AFTD_SECRET_ORCH_API_TOKEN": TOKEN})
    return d


async def _report_after_attempts(api: Api, orch: Orchestrator, job_name: str,
                                 attempts: int = 1) -> dict[str, Any]:
    """Run the reporter for orchestrator job ``job_name``; its report once tried ``attempts``
    times."""
    orch.add_job(job_name)
    api.key = API_KEY
    status, job = await api.trigger("reporter", {"url": f"{orch.url}/jobs/{job_name}/report"})
    assert status == 201, job
    deadline = time.monotonic() + 60
    while True:
        report = (await api.job(job["jobId"]))["report"]
        if report is not None and report["attempts"] >= attempts:
            return dict(report, jobId=job["jobId"])
        assert time.monotonic() < deadline, report
        await asyncio.sleep(0.05)


def _at(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


async def _list(api: Api, query: str = "") -> dict[str, Any]:
    status, page = await api.request("GET", f"/v1/reports{query}")
    assert status == 200, page
    return dict(page)


async def test_pending_reports_are_listed_and_retried_now(reports_daemon: DaemonProcess,
                                                          orch: Orchestrator) -> None:
    api = Api(reports_daemon)
    try:
        orch.fail_reports(2, 503)
        first = await _report_after_attempts(api, orch, "o1")
        second = await _report_after_attempts(api, orch, "o2")
        for r in (first, second):
            assert r["state"] == "pending" and _at(r["nextAttemptAt"]) > time.time() + 1200
        api.key = READER
        page = await _list(api, "?state=pending&limit=1")
        assert [r["reportId"] for r in page["reports"]] == [second["reportId"]]
        rest = await _list(api, f"?state=pending&limit=1&cursor={page['nextCursor']}")
        assert [r["reportId"] for r in rest["reports"]] == [first["reportId"]]
        assert rest["nextCursor"] is None and rest["reports"][0]["jobId"] == first["jobId"]
        assert (await _list(api, "?state=abandoned"))["reports"] == []
        status, err = await api.request("POST", f"/v1/reports/{first['reportId']}/retry")
        assert (status, err["error"]["message"]) == (
            403, "API key 'reader' lacks scope 'reports:manage'")

        api.key = MANAGER
        status, retried = await api.request("POST", f"/v1/reports/{first['reportId']}/retry")
        assert status == 200, retried
        assert retried["state"] == "pending" and _at(retried["nextAttemptAt"]) < time.time() + 60
        [body] = await orch.wait_reports("o1", timeout=60)
        assert body == {"status": "completed", "jobId": first["jobId"]}
        assert orch.reports("o2") == []  # the other one still waits for its hour
        api.key = READER
        assert (await api.job(first["jobId"]))["report"]["state"] in ("pending", "delivered")
        await _delivered(api, first["jobId"])
        api.key = MANAGER
        status, err = await api.request("POST", f"/v1/reports/{first['reportId']}/retry")
        assert (status, err["error"]["code"]) == (409, "report_not_retryable")
        assert "delivered" in err["error"]["message"]
        for bad in ("123456789", "abc"):
            status, err = await api.request("POST", f"/v1/reports/{bad}/retry")
            assert (status, err["error"]["code"]) == (404, "unknown_report")
    finally:
        await api.close()


async def test_an_abandoned_report_comes_back_with_a_fresh_deadline(
        reports_daemon: DaemonProcess, orch: Orchestrator) -> None:
    api = Api(reports_daemon)
    try:
        orch.fail_reports(1, 400)  # a refusal: abandoned at once
        report = await _report_after_attempts(api, orch, "o3")
        assert report["state"] == "abandoned" and report["nextAttemptAt"] is None
        api.key = READER
        listed = (await _list(api, "?state=abandoned"))["reports"]
        assert [r["reportId"] for r in listed] == [report["reportId"]]
        assert listed[0]["lastStatus"] == 400 and "HTTP 400" in listed[0]["lastError"]
        assert (await _list(api, "?state=pending"))["reports"] == []
        api.key = MANAGER
        status, retried = await api.request("POST", f"/v1/reports/{report['reportId']}/retry")
        assert (status, retried["state"]) == (200, "pending"), retried
        await orch.wait_reports("o3", timeout=60)
        keys = {a.key for a in orch.report_attempts("o3")}
        assert keys == {report["idempotencyKey"]}  # the same report, not a new one
        api.key = READER
        delivered = await _delivered(api, report["jobId"])
        assert delivered["attempts"] == 2
        assert (await _list(api))["reports"] == []
        status, err = await api.request("GET", "/v1/reports?state=delivered")
        assert status == 400 and "'delivered' is not one of pending, abandoned" in \
            err["error"]["message"]
    finally:
        await api.close()


async def _delivered(api: Api, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while (report := (await api.job(job_id))["report"])["state"] != "delivered":
        assert time.monotonic() < deadline, report
        await asyncio.sleep(0.05)
    return dict(report)
