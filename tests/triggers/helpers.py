"""Scripts, config snippets and waits shared by the trigger tests."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from typing import Any

from tests.fixtures.daemon import API_KEY, Api, DaemonProcess

# Records every fire in the job log and sleeps or fails when the params say so.
RECORD = '''
import asyncio

async def main(job):
    job.log.info("fired", **dict(job.params))
    await asyncio.sleep(float(job.params.get("sleep", 0)))
    if job.params.get("fail"):
        return 3
    return 0
'''
# Fails for files whose name contains "bad".
PICKY = '''
async def main(job):
    path = job.params["path"]
    job.log.info("picky", path=path)
    return 2 if "bad" in path else 0
'''
SCRIPTS = {"record": RECORD, "picky": PICKY}
TERMINAL = ("succeeded", "failed", "cancelled", "interrupted")


def watch(name: str, vfs: str, *, script: str = "record", **keys: Any) -> str:
    """A [[triggers]] table of type watch; poll_s and stable_s small for tests."""
    keys.setdefault("poll_s", 0.5)
    keys.setdefault("stable_s", 1)
    return table(name=name, type="watch", vfs=vfs, script=script, **keys)


def schedule(name: str, *, script: str = "record", **keys: Any) -> str:
    return table(name=name, type="schedule", script=script, **keys)


def table(**keys: Any) -> str:
    lines = ["[[triggers]]"]
    for k, v in keys.items():
        lines.append(f"{k} = {_toml(v)}")
    return "\n" + "\n".join(lines) + "\n"


def local_vfs(name: str, root: Any) -> str:
    return textwrap.dedent(f"""
        [vfs.{name}]
        type = "local"
        root = "{root}"
    """)


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml(x)}" for k, x in v.items()) + " }"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


async def jobs_of(api: Api, trigger: str, *, params: bool = True) -> list[dict[str, Any]]:
    """Every job the trigger fired (all pages), oldest first."""
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        q = f"/v1/jobs?trigger={trigger}&limit=1000&params={'true' if params else 'false'}"
        status, page = await api.request("GET", q + (f"&cursor={cursor}" if cursor else ""))
        assert status == 200, page
        out.extend(page["jobs"])
        cursor = page["nextCursor"]
        if cursor is None:
            return out[::-1]


async def wait_jobs(api: Api, trigger: str, n: int, *, timeout: float = 60,
                    final: bool = True) -> list[dict[str, Any]]:
    """Until the trigger fired at least ``n`` jobs (all ended, with ``final``)."""
    deadline = time.monotonic() + timeout
    while True:
        jobs = await jobs_of(api, trigger)
        done = [j for j in jobs if j["status"] in TERMINAL] if final else jobs
        if len(done) >= n:
            return jobs
        if time.monotonic() > deadline:
            raise AssertionError(f"{trigger}: {len(done)} of {n} jobs after {timeout}s: "
                                 f"{[j['status'] for j in jobs][:20]}")
        await asyncio.sleep(0.2)


async def trigger_status(api: Api, name: str) -> dict[str, Any]:
    status, body = await api.request("GET", f"/v1/triggers/{name}")
    assert status == 200, body
    return dict(body)


async def wait_status(api: Api, name: str, pred: Any, *, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        st = await trigger_status(api, name)
        if pred(st):
            return st
        if time.monotonic() > deadline:
            raise AssertionError(f"{name}: condition not met in {timeout}s: {st}")
        await asyncio.sleep(0.2)


def aft(d: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """The ``aft`` CLI against the daemon."""
    env = {**os.environ, "AFT_API_KEY": API_KEY}
    return subprocess.run([sys.executable, "-m", "aftd.cli", *args, "--host",
                           f"127.0.0.1:{d.port}", "--cacert", str(d.cert)],
                          capture_output=True, text=True, timeout=60, env=env)
