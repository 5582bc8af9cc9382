"""The REST contract against the real daemon process over HTTPS."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from tests.fixtures.daemon import Api, DaemonProcess


@pytest.fixture
def daemon(module_daemon: DaemonProcess) -> DaemonProcess:
    """One daemon for the module's tests of single jobs; a test that lists jobs or changes the
    config starts its own."""
    return module_daemon


async def test_trigger_with_list_params_and_poll_to_success(api: Api) -> None:
    status, body = await api.trigger("hello", [{"name": "name", "value": "list"}])
    assert status == 201
    assert body["status"] in ("queued", "running")
    job = await api.wait_job(body["jobId"])
    assert job["status"] == "succeeded"
    assert job["exitCode"] == 0
    assert job["params"] == {"name": "list"}


async def test_trigger_with_flat_object_params(api: Api) -> None:
    status, body = await api.trigger("hello", {"name": "flat", "exit_code": 0})
    assert status == 201
    assert (await api.wait_job(body["jobId"]))["params"] == {"name": "flat", "exit_code": 0}


async def test_location_header_points_at_the_job(api: Api, daemon: DaemonProcess) -> None:
    async with api.session.post(f"{daemon.url}/v1/jobs", json={"scriptId": "hello"},
                                headers=api.headers(), ssl=daemon.ssl_context()) as r:
        assert r.status == 201
        body = await r.json()
        assert r.headers["Location"] == f"/v1/jobs/{body['jobId']}"


async def test_script_name_is_case_insensitive(api: Api) -> None:
    status, body = await api.request("POST", "/v1/jobs", json={"scriptName": "HeLLo"})
    assert status == 201
    assert body["scriptId"] == "hello"


async def test_idempotency_key_returns_the_same_job(api: Api) -> None:
    hdr = {"Idempotency-Key": "retry-123"}
    s1, b1 = await api.trigger("hello", {"name": "x"}, headers=hdr)
    s2, b2 = await api.trigger("hello", {"name": "x"}, headers=hdr)
    assert (s1, s2) == (201, 200)
    assert b1["jobId"] == b2["jobId"]
    _, page = await api.request("GET", "/v1/jobs?script=hello")
    assert [j["jobId"] for j in page["jobs"]].count(b1["jobId"]) == 1
    s3, b3 = await api.trigger("hello", {"name": "other"}, headers=hdr)
    assert s3 == 409
    assert b3["error"]["code"] == "idempotency_conflict"


async def test_list_filters_and_pages_newest_first(make_daemon: Callable[..., Any]) -> None:
    api = Api(await make_daemon())  # its own: the other tests' jobs would be listed too
    try:
        await _list_filters_and_pages(api)
    finally:
        await api.close()


async def _list_filters_and_pages(api: Api) -> None:
    ids = []
    for i in range(5):
        _, b = await api.trigger("hello", {"exit_code": i % 2})
        ids.append(b["jobId"])
    for j in ids:
        await api.wait_job(j)
    _, page1 = await api.request("GET", "/v1/jobs?limit=2")
    assert [j["jobId"] for j in page1["jobs"]] == ids[::-1][:2]
    _, page2 = await api.request("GET", f"/v1/jobs?limit=2&cursor={page1['nextCursor']}")
    assert [j["jobId"] for j in page2["jobs"]] == ids[::-1][2:4]
    _, failed = await api.request("GET", "/v1/jobs?status=failed&script=hello")
    assert {j["jobId"] for j in failed["jobs"]} == {ids[1], ids[3]}
    status, err = await api.request("GET", "/v1/jobs?status=bogus")
    assert status == 400
    assert "bogus" in err["error"]["message"]


async def test_scripts_health_openapi(api: Api) -> None:
    status, body = await api.request("GET", "/v1/scripts")
    assert status == 200
    assert "hello" in [s["scriptId"] for s in body["scripts"]]
    status, health = await api.request("GET", "/v1/health")
    assert status == 200
    assert health["status"] == "ok"
    status, doc = await api.request("GET", "/v1/openapi.json")
    assert status == 200
    for path in ("/v1/jobs", "/v1/jobs/{jobId}", "/v1/jobs/{jobId}/cancel",
                 "/v1/jobs/{jobId}/log", "/v1/scripts", "/v1/health"):
        assert path in doc["paths"], path


async def test_job_log_and_follow(api: Api, daemon: DaemonProcess) -> None:
    _, body = await api.trigger("hello", {"name": "follow-me", "sleep": "0.5"})
    lines = []
    async with api.session.get(f"{daemon.url}/v1/jobs/{body['jobId']}/log?follow=true",
                               headers=api.headers(), ssl=daemon.ssl_context()) as r:
        assert r.status == 200
        async for raw in r.content:
            if raw.strip():
                import json

                lines.append(json.loads(raw))
    events = [line["event"] for line in lines]
    assert "hello" in events
    assert events[-1] == "job_finished"
    hello = next(line for line in lines if line["event"] == "hello")
    assert hello["name"] == "follow-me"
    assert hello["script_id"] == "hello"
    _, log = await api.request("GET", f"/v1/jobs/{body['jobId']}/log")
    assert [line["event"] for line in log["lines"]] == events


async def test_cancel_queued_and_running(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d = await make_daemon(extra_config="[jobs]\nmax_concurrent = 1\n", scripts={"slow": '''
import asyncio, pathlib
async def main(job):
    try:
        await asyncio.sleep(60)
    finally:
        pathlib.Path(job.params["marker"]).write_text("finally ran")
'''})
    api = Api(d)
    try:
        marker = d.root / "marker.txt"
        _, running = await api.trigger("slow", {"marker": str(marker)})
        _, queued = await api.trigger("slow", {"marker": str(d.root / "never.txt")})
        await api.wait_job(running["jobId"], ("running",))
        s, q = await api.request("POST", f"/v1/jobs/{queued['jobId']}/cancel")
        assert (s, q["status"]) == (200, "cancelled")
        s, _ = await api.request("POST", f"/v1/jobs/{running['jobId']}/cancel")
        assert s == 200
        assert (await api.wait_job(running["jobId"]))["status"] == "cancelled"
        assert marker.read_text() == "finally ran"
        assert not (d.root / "never.txt").exists()
        s, err = await api.request("POST", f"/v1/jobs/{running['jobId']}/cancel")
        assert s == 409
        assert err["error"]["code"] == "job_finished"
    finally:
        await api.close()


async def test_concurrency_is_bounded_and_all_jobs_finish(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d = await make_daemon(extra_config="[jobs]\nmax_concurrent = 8\n")
    api = Api(d)
    try:
        results = await asyncio.gather(*(api.trigger("hello", {"sleep": "0.05"})
                                         for _ in range(200)))
        assert all(s == 201 for s, _ in results)
        jobs = [await api.wait_job(b["jobId"], timeout=120) for _, b in results]
        assert all(j["status"] == "succeeded" for j in jobs)
        events = sorted([(j["startedAt"], 1) for j in jobs] + [(j["finishedAt"], -1) for j in jobs],
                        key=lambda e: (e[0], e[1]))
        running = peak = 0
        for _, delta in events:
            running += delta
            peak = max(peak, running)
        assert 1 <= peak <= 8
    finally:
        await api.close()
