"""Helpers of the end-to-end report tests: a daemon configured for an orchestrator."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.fixtures.daemon import Api, DaemonProcess
from tests.fixtures.orchestrator import Orchestrator

__all__ = ["BUNDLED", "GATED", "daemon_for", "run_workflow", "secret_env", "wait_delivered"]

BUNDLED = (Path(__file__).resolve().parents[2] / "aftd" / "examples" / "scripts"
           / "claim_transfer_report.py").read_text()

# Claims, then waits for a gate file before copying: a transfer the test can interrupt.
GATED = '''
"""Claim, wait for a gate file, then copy and report."""
import asyncio
from pathlib import Path

from aftd.report.workflow import claimed


async def main(job):
    async with claimed(job, job_id=job.params["job_id"]) as work:
        gate = Path(job.params["gate"])
        while not gate.exists():
            await asyncio.sleep(0.05)
        c = work.claim
        await work.src.copy_to(c.source_path, work.dst, c.dest_dir)
    return 0
'''


def _config(src: Path, dst: Path, extra: str) -> str:
    return f"""
[reports]
initial_backoff_s = 0.2
max_backoff_s = 1.0
[jobs]
shutdown_grace_s = 0.5
[vfs.src]
type = "local"
root = "{src}"
[vfs.dst]
type = "local"
root = "{dst}"
""" + extra


async def daemon_for(make_daemon: Callable[..., Any], orch: Orchestrator, root: Path, *,
                     extra: str = "") -> tuple[DaemonProcess, Path, Path]:
    """A started daemon whose env secrets point at ``orch``, with local VFS ``src`` and ``dst``."""
    src, dst = root / "src", root / "dst"
    src.mkdir(parents=True)
    (dst / "in").mkdir(parents=True)
    d: DaemonProcess = await make_daemon(
        scripts={"claim_transfer_report": BUNDLED, "gated": GATED},
        extra_config=_config(src, dst, extra),
        env={"AFTD_SECRET_ORCH_API_URL": orch.url,
             "AFTD_SECRET_ORCH_API_TOKEN": orch.token})
    return d, src, dst


def secret_env(orch: Orchestrator, *secrets: dict[str, str]) -> dict[str, str]:
    """The daemon's environment: the orchestrator's URL and token and ``secrets`` (name to
    value, as fixtures give them) for the env secret provider."""
    env = {"AFTD_SECRET_ORCH_API_URL": orch.url, "AFTD_SECRET_ORCH_API_TOKEN": orch.token}
    for group in secrets:
        env.update({"AFTD_SECRET_" + re.sub(r"[^A-Z0-9]", "_", k.upper()): v
                    for k, v in group.items()})
    return env


async def run_workflow(api: Api, job_id: str, *, timeout: float = 60.0) -> dict[str, Any]:
    """Trigger the bundled workflow for the orchestrator's job ``job_id``; check that the job
    succeeded and return it once its report is delivered."""
    status, body = await api.trigger("claim_transfer_report", [{"name": "job_id", "value": job_id}])
    assert status == 201, body
    job = await api.wait_job(body["jobId"], timeout=timeout)
    assert (job["status"], job["exitCode"]) == ("succeeded", 0), job
    return await wait_delivered(api, body["jobId"])


async def wait_delivered(api: Api, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
    """Poll ``GET /v1/jobs/{id}`` until the job has ended and its report is delivered (or
    abandoned). Both: a report the script sent itself can be delivered before the job ends."""
    deadline = time.monotonic() + timeout
    while True:
        job = await api.job(job_id)
        report = job.get("report")
        ended = job["status"] in ("succeeded", "failed", "cancelled", "interrupted")
        if ended and report and report["state"] in ("delivered", "abandoned"):
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"report of {job_id} still {report}")
        await asyncio.sleep(0.05)
