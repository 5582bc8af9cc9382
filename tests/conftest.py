"""Shared pytest fixtures: the real daemon process and an HTTPS client for it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# The real servers, registered once here: a session-scoped fixture imported into several
# conftest files or test modules is a separate fixture in each place, and was started once per
# place (three OpenBao, PostgreSQL, SeaweedFS, Azurite servers in one run).
from tests.fixtures.azurite import azurite  # noqa: F401
from tests.fixtures.daemon import Api, DaemonProcess, start_sync
from tests.fixtures.diskfull import tiny_fs  # noqa: F401  (a fixture for every area)
from tests.fixtures.ftp import pyftpdlib_ftps, vsftpd  # noqa: F401
from tests.fixtures.gcs import fake_gcs  # noqa: F401
from tests.fixtures.openbao import openbao, openbao_private  # noqa: F401
from tests.fixtures.postgres import postgres  # noqa: F401
from tests.fixtures.s3 import rclone_s3, seaweedfs  # noqa: F401

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


@pytest.fixture(scope="module")
def module_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """One daemon (default config, the hello script) for a module's tests that need no state
    of their own: a module overrides ``daemon`` with it. A start costs seconds on a loaded
    machine, and a module of error-response tests would otherwise start one per case."""
    d = DaemonProcess(tmp_path_factory.mktemp("module-daemon"), scripts={"hello": HELLO})
    start_sync(d)
    yield d
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
