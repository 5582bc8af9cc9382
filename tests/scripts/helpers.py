"""Helpers of the script-isolation tests: run a job, read its log, find worker processes."""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

from tests.fixtures.daemon import Api, DaemonProcess

__all__ = [
    "daemon_events",
    "daemon_strings",
    "job_log",
    "pid_alive",
    "run_job",
    "strings",
    "wait_event",
    "wait_pid_gone",
]


async def run_job(api: Api, script: str, params: Any = None,
                  timeout: float = 60) -> dict[str, Any]:
    status, body = await api.trigger(script, params)
    assert status == 201, body
    return await api.wait_job(body["jobId"], timeout=timeout)


async def job_log(api: Api, job_id: str) -> list[dict[str, Any]]:
    status, body = await api.request("GET", f"/v1/jobs/{job_id}/log")
    assert status == 200, body
    return list(body["lines"])


async def wait_event(api: Api, job_id: str, event: str, timeout: float = 30) -> dict[str, Any]:
    """The first line of the job's log with this event, polled until it appears."""
    deadline = time.monotonic() + timeout
    while True:
        for line in await job_log(api, job_id):
            if line.get("event") == event:
                return line
        if time.monotonic() > deadline:
            raise AssertionError(f"no {event!r} in the log of {job_id}")
        await asyncio.sleep(0.05)


def daemon_events(d: DaemonProcess, event: str) -> list[dict[str, Any]]:
    """The daemon's own JSON log lines with this event."""
    out = []
    for raw in d.logs().splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if isinstance(line, dict) and line.get("event") == event:
            out.append(line)
    return out


def strings(value: Any) -> list[str]:
    """Every string inside a decoded JSON value (to look for a secret as the reader sees it)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*strings(k), *strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


def daemon_strings(d: DaemonProcess) -> list[str]:
    out: list[str] = []
    for raw in d.logs().splitlines():
        try:
            out.extend(strings(json.loads(raw)))
        except ValueError:
            out.append(raw)
    return out


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes; it only waits for its parent to reap it.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def wait_pid_gone(pid: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            raise AssertionError(f"worker process {pid} still alive after {timeout} s")
        await asyncio.sleep(0.05)
