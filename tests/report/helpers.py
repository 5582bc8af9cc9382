"""Helpers shared by the report tests."""

from __future__ import annotations

import asyncio
from typing import Any

from aftd.config import ReportsConfig
from aftd.report.outbox import Outbox

__all__ = ["FAST", "wait_report"]

# Short backoffs so retries happen within a test; the deadline stays far away unless a test
# is about the deadline.
FAST = ReportsConfig(deadline_s=60.0, initial_backoff_s=0.05, max_backoff_s=0.5, timeout_s=5.0)


async def wait_report(box: Outbox, job_id: str, *states: str, attempts: int = 0,
                      timeout: float = 30.0) -> dict[str, Any]:
    """Poll the outbox until the job's report is in one of ``states`` (and has ``attempts``)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        rep = await box.job_report(job_id)
        if rep is not None and rep["state"] in states and rep["attempts"] >= attempts:
            return rep
        if loop.time() > end:
            raise AssertionError(f"report of {job_id} never reached {states}: {rep}")
        await asyncio.sleep(0.02)
