"""Shared pytest fixtures: the real daemon process and an HTTPS client for it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.daemon import Api, DaemonProcess

HELLO = '''
import asyncio

async def main(job):
    job.log.info("hello", name=job.params.get("name", "world"))
    await asyncio.sleep(float(job.params.get("sleep", 0)))
    return int(job.params.get("exit_code", 0))
'''


@pytest.fixture
async def make_daemon(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Factory: ``await make_daemon(scripts={...}, extra_config=...)`` -> started daemon."""
    started: list[DaemonProcess] = []

    async def make(*, start: bool = True, name: str = "d", **kw: Any) -> DaemonProcess:
        kw.setdefault("scripts", {"hello": HELLO})
        d = DaemonProcess(tmp_path / f"{name}{len(started)}", **kw)
        started.append(d)
        if start:
            await d.start()
        return d

    yield make
    for d in started:
        d.stop()


@pytest.fixture
async def daemon(make_daemon: Callable[..., Any]) -> DaemonProcess:
    d: DaemonProcess = await make_daemon()
    return d


@pytest.fixture
async def api(daemon: DaemonProcess) -> AsyncIterator[Api]:
    client = Api(daemon)
    yield client
    await client.close()
