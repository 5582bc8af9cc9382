"""A script that blocks the event loop is named in the log and counted in /metrics; the same
script isolated in a worker process blocks nothing."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.fixtures.daemon import Api, DaemonProcess
from tests.scripts.helpers import daemon_events, run_job, wait_event

BLOCKER = '''
import time


def wait_for_the_disk(seconds):
    time.sleep(seconds)


async def main(job):
    job.log.info("worker_started")
    wait_for_the_disk(float(job.params.get("s", 1.5)))
    return 0
'''

SCRIPTS = {"blocker": BLOCKER, "blocker_iso": 'ISOLATION = "process"\n' + BLOCKER}


@pytest.fixture
async def blocky(make_daemon: Callable[..., Any]) -> AsyncIterator[tuple[DaemonProcess, Api]]:
    d: DaemonProcess = await make_daemon(scripts=SCRIPTS,
                                         extra_config="[jobs]\nloop_block_warn_s = 0.3\n")
    api = Api(d)
    yield d, api
    await api.close()


def _metric(text: str, name: str, labels: str = "") -> float:
    pattern = rf"^{re.escape(name + labels)} ([0-9.e+-]+)$"
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def _wait_metric(api: Api, name: str, labels: str, minimum: float) -> float:
    deadline = time.monotonic() + 20
    while True:
        status, text = await api.request("GET", "/metrics")
        assert status == 200
        value = _metric(text, name, labels)
        if value >= minimum or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.1)


async def test_a_blocking_inline_script_is_named_with_its_stack(
        blocky: tuple[DaemonProcess, Api]) -> None:
    d, api = blocky
    job = await run_job(api, "blocker", {"s": 1.5})
    assert job["status"] == "succeeded"
    await d.wait_for_log('"event_loop_unblocked"')
    blocked = [e for e in daemon_events(d, "event_loop_blocked") if e["job_id"] == job["jobId"]]
    assert len(blocked) == 1, blocked
    line = blocked[0]
    assert line["script_id"] == "blocker"
    assert line["level"] == "warning" and line["blocked_s"] >= 0.3
    assert "time.sleep(seconds)" in line["stack"] and "wait_for_the_disk" in line["stack"]
    assert "blocker.py" in line["stack"]
    ended = next(e for e in daemon_events(d, "event_loop_unblocked")
                 if e["job_id"] == job["jobId"])
    assert ended["blocked_s"] >= line["blocked_s"]
    assert await _wait_metric(api, "aftd_event_loop_blocked_total", '{script="blocker"}', 1) >= 1
    assert await _wait_metric(api, "aftd_event_loop_blocked_seconds_total", "", 1.0) >= 1.0


async def test_the_same_script_isolated_does_not_block_health(
        blocky: tuple[DaemonProcess, Api]) -> None:
    d, api = blocky
    latency = await _health_latencies(api, 5)
    baseline = max(latency)
    status, body = await api.trigger("blocker_iso", {"s": 4})
    assert status == 201, body
    await wait_event(api, body["jobId"], "worker_started")
    during = await _health_latencies(api, 20)
    job = await api.wait_job(body["jobId"])
    assert job["status"] == "succeeded", job
    # Blocked inline, requests would wait up to 4 s; generous against a loaded machine.
    assert max(during) < max(2.0, 10 * baseline), (baseline, during)
    assert not [e for e in daemon_events(d, "event_loop_blocked")
                if e.get("script_id") == "blocker_iso"]


async def _health_latencies(api: Api, n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.monotonic()
        status, _ = await api.request("GET", "/v1/health")
        out.append(time.monotonic() - started)
        assert status == 200
        await asyncio.sleep(0.1)
    return out
