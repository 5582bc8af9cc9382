"""Process isolation as the daemon uses it: the default from ``[scripts] isolation``, a bad
declaration, shutdown, and the claim → transfer → report helper inside a worker process."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.daemon import Api, DaemonProcess
from tests.fixtures.orchestrator import Orchestrator
from tests.report.e2e import BUNDLED, GATED, daemon_for, wait_delivered
from tests.scripts.helpers import job_log, run_job, wait_event, wait_pid_gone

WHO = '''
import asyncio
import os

async def main(job):
    job.log.info("worker", pid=os.getpid())
    await asyncio.sleep(float(job.params.get("sleep", 0)))
    return 0
'''


def _isolated(source: str) -> str:
    return source + '\nISOLATION = "process"\n'


@pytest.fixture
async def orch() -> AsyncIterator[Orchestrator]:
    o = Orchestrator(token="orch-iso-token-5678")
    await o.start()
    yield o
    await o.stop()


async def _pid_of(api: Api, script: str) -> int:
    job = await run_job(api, script)
    assert job["status"] == "succeeded", job
    return int(next(line["pid"] for line in await job_log(api, job["jobId"])
                    if line["event"] == "worker"))


async def test_config_default_and_per_script_override(make_daemon: Callable[..., Any]) -> None:
    d: DaemonProcess = await make_daemon(
        scripts={"plain": WHO, "inline": WHO + '\nISOLATION = "inline"\n'},
        extra_config='[scripts]\nisolation = "process"\n')
    api = Api(d)
    try:
        assert d.proc is not None
        assert await _pid_of(api, "plain") != d.proc.pid
        assert await _pid_of(api, "inline") == d.proc.pid
    finally:
        await api.close()


async def test_a_bad_declaration_fails_its_job_naming_it(make_daemon: Callable[..., Any]) -> None:
    d: DaemonProcess = await make_daemon(scripts={
        "typo": WHO + '\nISOLATION = "proces"\n', "expr": WHO + "\nISOLATION = MODE\n",
        "plain": WHO})
    api = Api(d)
    try:
        job = await run_job(api, "typo")
        assert job["status"] == "failed"
        assert job["error"] == ("script 'typo': ISOLATION must be \"inline\" or \"process\", "
                                "got 'proces'")
        job = await run_job(api, "expr")
        assert job["status"] == "failed" and "got '<MODE>'" in job["error"], job
        assert (await run_job(api, "plain"))["status"] == "succeeded"
    finally:
        await api.close()


@pytest.mark.slow
async def test_shutdown_interrupts_an_isolated_job_and_ends_its_worker(
        make_daemon: Callable[..., Any]) -> None:
    d: DaemonProcess = await make_daemon(scripts={"who": _isolated(WHO)}, extra_config="""
[jobs]
shutdown_grace_s = 0.2
[scripts]
kill_grace_s = 0.5
""")
    api = Api(d)
    try:
        status, body = await api.trigger("who", {"sleep": 120})
        assert status == 201, body
        pid = int((await wait_event(api, body["jobId"], "worker"))["pid"])
        d.signal(signal.SIGTERM)
        assert await d.wait_exit(30) == 0
        await wait_pid_gone(pid)
        await d.start()
        assert (await api.job(body["jobId"]))["status"] == "interrupted"
    finally:
        await api.close()


@pytest.mark.slow
async def test_claim_transfer_report_in_a_worker_delivers_one_report(
        make_daemon: Callable[..., Any], orch: Orchestrator, tmp_path: Path) -> None:
    d, src, dst = await daemon_for(make_daemon, orch, tmp_path)
    d.write_script("iso_ctr", _isolated(BUNDLED))
    (src / "batch-1.csv").write_bytes(b"a,b\n" * 1000)
    orch.add_job("orch-1", {"sourceVfs": "src", "sourcePath": "batch-1.csv",
                            "destVfs": "dst", "destDir": "in"})
    api = Api(d)
    try:
        job = await run_job(api, "iso_ctr", {"job_id": "orch-1"})
        assert (job["status"], job["exitCode"]) == ("succeeded", 0), job
        job = await wait_delivered(api, job["jobId"])
    finally:
        await api.close()
    assert (dst / "in" / "batch-1.csv").read_bytes() == b"a,b\n" * 1000
    assert job["report"]["state"] == "delivered"
    assert orch.reports("orch-1") == [{"jobId": "orch-1", "status": "completed",
                                       "agent": "aftd"}]
    assert orch.claims("orch-1") == 1


@pytest.mark.slow
async def test_cancelled_claimed_worker_still_reports_failed_once(
        make_daemon: Callable[..., Any], orch: Orchestrator, tmp_path: Path) -> None:
    d, src, _ = await daemon_for(make_daemon, orch, tmp_path, extra="[scripts]\nkill_grace_s = 1\n")
    d.write_script("iso_gated", _isolated(GATED))
    (src / "orch-2.dat").write_bytes(b"x" * 100)
    orch.add_job("orch-2")
    api = Api(d)
    try:
        status, body = await api.trigger("iso_gated", {"job_id": "orch-2",
                                                       "gate": str(tmp_path / "never")})
        assert status == 201, body
        await wait_event(api, body["jobId"], "job_claimed")
        status, _ = await api.request("POST", f"/v1/jobs/{body['jobId']}/cancel")
        assert status == 200
        job = await api.wait_job(body["jobId"])
        assert job["status"] == "cancelled", job
        await wait_delivered(api, body["jobId"])
    finally:
        await api.close()
    assert orch.reports("orch-2") == [{"jobId": "orch-2", "status": "failed", "agent": "aftd"}]


SLEEPER = '''
import asyncio
import os

ISOLATION = "process"
TIMEOUT_S = 3


async def main(job):
    job.log.info("worker", pid=os.getpid())
    try:
        await asyncio.sleep(float(job.params.get("sleep", 120)))
    finally:
        job.log.info("finally_ran")
'''


async def _timed_out(api: Api, body: dict[str, Any], seconds: str) -> None:
    pid = int((await wait_event(api, body["jobId"], "worker"))["pid"])
    job = await api.wait_job(body["jobId"], timeout=30)
    assert job["status"] == "failed", job
    assert f"timed out after {seconds}" in job["error"], job
    await wait_pid_gone(pid)
    assert "finally_ran" in [line["event"] for line in await job_log(api, body["jobId"])]


async def test_timeouts_end_isolated_workers(make_daemon: Callable[..., Any]) -> None:
    d: DaemonProcess = await make_daemon(scripts={
        "sleeper": SLEEPER, "untimed": SLEEPER.replace("TIMEOUT_S = 3", ""),
        "computed": SLEEPER.replace("TIMEOUT_S = 3", "TIMEOUT_S = 60 * 5"),
        "who": _isolated(WHO)},
        extra_config="[scripts]\nkill_grace_s = 1\n")
    api = Api(d)
    try:
        # A worker started once first: on a loaded machine starting the pool could take
        # longer than the timeouts below, which must end a script that is running.
        assert (await run_job(api, "who"))["status"] == "succeeded"
        status, body = await api.trigger("sleeper")
        assert status == 201, body
        await _timed_out(api, body, "3 s")
        status, body = await api.request("POST", "/v1/jobs", json={
            "scriptId": "untimed", "timeoutS": 3.5})
        assert status == 201, body
        await _timed_out(api, body, "3.5 s")
        job = await run_job(api, "computed")
        assert job["status"] == "failed", job
        assert "TIMEOUT_S" in job["error"] and "literal" in job["error"], job
    finally:
        await api.close()
