"""Timing jobs through a real daemon, shared by the per-job benchmarks (isolation_bench.py,
syncjs_bench.py): run jobs one after another or in a burst, read their times from the daemon's
own ``createdAt``/``startedAt``/``finishedAt``, and print medians with their ranges."""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.fixtures.daemon import Api, DaemonProcess  # noqa: E402

__all__ = ["burst", "job_daemon", "pct", "print_medians", "sequential", "wait_done"]

TERMINAL = ("succeeded", "failed", "cancelled", "interrupted")


@asynccontextmanager
async def job_daemon(root: Path, scripts: Mapping[str, str], *, max_concurrent: int,
                     max_workers: int, env: Mapping[str, str] | None = None,
                     ) -> AsyncIterator[tuple[DaemonProcess, Api]]:
    """The daemon as its own process (warnings only in its log) and a client of its API."""
    d = DaemonProcess(root, scripts=dict(scripts), env=dict(env or {}), extra_config=f"""
[logging]
level = "warning"
[jobs]
max_concurrent = {max_concurrent}
[scripts]
max_workers = {max_workers}
""")
    await d.start()
    api = Api(d)
    try:
        yield d, api
    finally:
        await api.close()
        d.stop()


def ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def wait_done(api: Api, job_id: str) -> dict[str, Any]:
    """The job once final; a job that did not succeed ends the benchmark."""
    while True:
        job = await api.job(job_id)
        if job["status"] in TERMINAL:
            if job["status"] != "succeeded":
                raise RuntimeError(f"job {job_id} ended {job['status']}: {job['error']}")
            return job
        await asyncio.sleep(0.005)


async def sequential(api: Api, script: str, n: int,
                     params: Any = None) -> tuple[list[float], list[float]]:
    """``n`` jobs one after another: each job's own run time (``startedAt`` → ``finishedAt``,
    measured by the daemon) and the client's trigger → final state time, in seconds."""
    own, e2e = [], []
    for _ in range(n):
        started = time.perf_counter()
        status, body = await api.trigger(script, params)
        assert status == 201, body
        job = await wait_done(api, body["jobId"])
        e2e.append(time.perf_counter() - started)
        own.append(ts(job["finishedAt"]) - ts(job["startedAt"]))
    return own, e2e


async def burst(api: Api, script: str, n: int,
                params: Callable[[int], Any] = lambda i: None) -> float:
    """Jobs/s of ``n`` jobs triggered at once (job ``i`` with ``params(i)``), from the first
    ``createdAt`` to the last ``finishedAt``."""
    triggered = await asyncio.gather(*(api.trigger(script, params(i)) for i in range(n)))
    jobs = [await wait_done(api, body["jobId"]) for _, body in triggered]
    span = max(ts(j["finishedAt"]) for j in jobs) - min(ts(j["createdAt"]) for j in jobs)
    return n / span


def print_medians(runs: list[dict[str, float]]) -> None:
    """One line a metric: its median over the runs and the range."""
    width = max(len(k) for k in runs[0])
    print(f"\n{'metric':<{width}}  {'median':>9}  range (min-max) over {len(runs)} runs")
    for key in runs[0]:
        values = [r[key] for r in runs]
        print(f"{key:<{width}}  {statistics.median(values):9.2f}  "
              f"{min(values):.2f} - {max(values):.2f}")
