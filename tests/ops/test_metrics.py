"""Metrics: helper functions, live-state callbacks, exposition validity, the HTTP middleware."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from aftd import __version__
from aftd import metrics as metrics_module
from aftd.metrics import JOB_STATES, Metrics, http_metrics_middleware, metrics_handler


def exercise(m: Metrics) -> None:
    """Touch every helper once or twice, as a few jobs would."""
    m.register_job_state_source(lambda: {"queued": 2, "running": 1, "succeeded": 7})
    m.set_queue(2, 1)
    m.set_outbox_depth(4)
    m.observe_job_finished("claim-transfer-report", "succeeded", 12.5)
    m.observe_job_finished("claim-transfer-report", "failed", 0.2)
    m.count_transfer("archive", "partner", files=3, nbytes=3_000_000)
    m.count_transfer("archive", "partner", files=1, nbytes=10)
    m.count_transfer_error("archive", "partner")
    m.count_report_delivered()
    m.count_report_failure()
    m.count_report_failure()
    m.count_secret_lookup("vault")
    m.count_secret_lookup("env")
    m.count_secret_failure()
    m.count_http_request("/v1/jobs/{jobId}", "GET", 200, 0.003)
    m.count_http_request("/v1/jobs", "BREW", 405, 0.001)
    m.count_loop_block("slowpoke")
    m.count_loop_block(None)
    m.add_loop_blocked_seconds(2.5)


def families(body: bytes) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(body.decode("utf-8"))}


def test_helpers_land_in_the_named_series() -> None:
    m = Metrics()
    exercise(m)
    value = m.registry.get_sample_value
    assert value("aftd_jobs_finished_total", {"script": "claim-transfer-report",
                                              "state": "failed"}) == 1  # fmt: skip
    assert value("aftd_job_duration_seconds_count", {"script": "claim-transfer-report"}) == 2
    assert value("aftd_job_duration_seconds_sum", {"script": "claim-transfer-report"}) == 12.7
    pair = {"src_vfs": "archive", "dst_vfs": "partner"}
    assert value("aftd_transfer_bytes_total", pair) == 3_000_010
    assert value("aftd_transfer_files_total", pair) == 4
    assert value("aftd_transfer_errors_total", pair) == 1
    assert value("aftd_reports_delivered_total") == 1
    assert value("aftd_report_delivery_failures_total") == 2
    assert value("aftd_secret_lookups_total", {"provider": "vault"}) == 1
    assert value("aftd_secret_failures_total") == 1
    assert value("aftd_event_loop_blocked_total", {"script": "slowpoke"}) == 1
    assert value("aftd_event_loop_blocked_total", {"script": ""}) == 1
    assert value("aftd_event_loop_blocked_seconds_total") == 2.5
    assert value("aftd_queue_depth") == 2
    assert value("aftd_jobs_running") == 1
    assert value("aftd_outbox_depth") == 4
    assert value("aftd_build_info", {"version": __version__}) == 1
    # An unknown HTTP verb is folded into one label value instead of minting new series.
    assert value("aftd_http_requests_total",
                 {"route": "/v1/jobs", "method": "other", "status": "405"}) == 1  # fmt: skip


def test_job_states_come_from_the_callback_at_scrape_time() -> None:
    m = Metrics()
    counts = {"queued": 1}
    m.register_job_state_source(lambda: counts)
    assert m.registry.get_sample_value("aftd_jobs", {"state": "queued"}) == 1
    counts["queued"] = 5
    counts["running"] = 2
    value = m.registry.get_sample_value
    assert value("aftd_jobs", {"state": "queued"}) == 5
    assert value("aftd_jobs", {"state": "running"}) == 2
    # States the store has none of are still exported, as zero.
    assert {s: value("aftd_jobs", {"state": s}) for s in JOB_STATES}["interrupted"] == 0


def test_live_sources_override_set_values() -> None:
    m = Metrics()
    m.set_queue(1, 1)
    m.set_outbox_depth(1)
    m.register_queue_source(lambda: (9, 3))
    m.register_outbox_source(lambda: 6)
    assert m.registry.get_sample_value("aftd_queue_depth") == 9
    assert m.registry.get_sample_value("aftd_jobs_running") == 3
    assert m.registry.get_sample_value("aftd_outbox_depth") == 6


def test_a_failing_source_drops_its_family_not_the_scrape() -> None:
    m = Metrics()

    def broken() -> dict[str, int]:
        raise RuntimeError("store closed")

    m.register_job_state_source(broken)
    m.count_report_delivered()
    with capture_logs() as logs:
        found = families(m.render()[0])
    assert "aftd_jobs" not in found
    assert "aftd_reports_delivered" in found
    assert [e["event"] for e in logs] == ["metrics_source_failed"]


def test_render_parses_and_names_every_contract_metric() -> None:
    m = Metrics()
    exercise(m)
    body, content_type = m.render()
    assert content_type.startswith("text/plain; version=0.0.4")
    found = families(body)
    expected = {
        "aftd_jobs", "aftd_job_duration_seconds", "aftd_jobs_finished", "aftd_transfer_bytes",
        "aftd_transfer_files", "aftd_transfer_errors", "aftd_queue_depth", "aftd_jobs_running",
        "aftd_outbox_depth", "aftd_report_delivery_failures", "aftd_reports_delivered",
        "aftd_secret_lookups", "aftd_secret_failures", "aftd_http_requests",
        "aftd_http_request_duration_seconds", "aftd_build_info", "aftd_event_loop_blocked",
        "aftd_event_loop_blocked_seconds",
    }  # fmt: skip
    assert expected <= set(found)


def test_openmetrics_is_served_when_asked_for() -> None:
    m = Metrics()
    exercise(m)
    body, content_type = m.render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


def test_registry_is_not_the_global_one() -> None:
    from prometheus_client import REGISTRY

    metrics_module.count_secret_lookup("file")
    assert REGISTRY.get_sample_value("aftd_secret_lookups_total", {"provider": "file"}) is None
    assert metrics_module.default_metrics.registry.get_sample_value(
        "aftd_secret_lookups_total", {"provider": "file"}
    )


def test_promtool_accepts_the_exposition(require_binary: Callable[[str], str]) -> None:
    promtool = require_binary("promtool")
    m = Metrics()
    exercise(m)
    body, _ = m.render()
    done = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    # promtool prints lint findings even when it exits 0 for some of them; we want none.
    assert done.stdout.decode().strip() == "", done.stdout.decode()
    assert done.stderr.decode().strip() == "", done.stderr.decode()


# -- the middleware, on a real aiohttp server ---------------------------------------------


async def _job(request: web.Request) -> web.Response:
    if request.match_info["jobId"] == "missing":
        raise web.HTTPNotFound(text="no such job")
    return web.json_response({"jobId": request.match_info["jobId"]})


async def _create(request: web.Request) -> web.Response:
    return web.json_response({"jobId": "j1"}, status=201)


async def _boom(request: web.Request) -> web.Response:
    raise RuntimeError("handler bug")


@pytest.fixture
async def served() -> AsyncIterator[tuple[TestClient[web.Request, web.Application], Metrics]]:
    m = Metrics()
    app = web.Application(middlewares=[http_metrics_middleware(m)])
    app.router.add_get("/v1/jobs/{jobId}", _job)
    app.router.add_post("/v1/jobs", _create)
    app.router.add_get("/boom", _boom)
    app.router.add_get("/metrics", metrics_handler(m))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client, m


async def test_middleware_labels_by_route_template(served) -> None:
    client, m = served
    for job_id in ("a1", "b2", "c3", "missing"):
        await (await client.get(f"/v1/jobs/{job_id}")).read()
    await (await client.post("/v1/jobs", json={})).read()
    await (await client.get("/no/such/path/123")).read()
    await (await client.delete("/v1/jobs")).read()
    await (await client.get("/boom")).read()

    def count(route: str, method: str, status: str) -> float | None:
        labels = {"route": route, "method": method, "status": status}
        return m.registry.get_sample_value("aftd_http_requests_total", labels)

    assert count("/v1/jobs/{jobId}", "GET", "200") == 3
    assert count("/v1/jobs/{jobId}", "GET", "404") == 1
    assert count("/v1/jobs", "POST", "201") == 1
    assert count("unmatched", "GET", "404") == 1
    assert count("unmatched", "DELETE", "405") == 1
    assert count("/boom", "GET", "500") == 1
    routes = {
        s.labels["route"]
        for f in m.registry.collect() if f.name == "aftd_http_requests"
        for s in f.samples
    }  # fmt: skip
    assert routes == {"/v1/jobs/{jobId}", "/v1/jobs", "unmatched", "/boom"}
    assert m.registry.get_sample_value(
        "aftd_http_request_duration_seconds_count", {"route": "/v1/jobs/{jobId}"}
    ) == 4


async def test_metrics_handler_serves_the_exposition(served) -> None:
    client, m = served
    m.count_transfer("a", "b", files=1, nbytes=5)
    response = await client.get("/metrics")
    body = await response.read()
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert families(body)["aftd_transfer_bytes"] is not None
    openmetrics = await client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert openmetrics.headers["Content-Type"].startswith("application/openmetrics-text")
    assert (await openmetrics.read()).endswith(b"# EOF\n")
