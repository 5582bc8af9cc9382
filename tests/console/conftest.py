"""One real daemon, one real orchestrator and one headless Chromium for the console tests, all
started once for the module that uses them (they share its event loop)."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

# tests/ is not a package; make `tests.fixtures` importable however pytest was started.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from tests.conftest import HELLO  # noqa: E402
from tests.fixtures.daemon import API_KEY, API_KEY_SHA256, DaemonProcess  # noqa: E402
from tests.fixtures.orchestrator import Orchestrator  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
# Headless and quiet: no sandbox (the tests run as root), no GPU, nothing phoned home.
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
READER_KEY = "reader-key-0123456789abcdef012345"
SHOTS_ENV = "AFTD_SCREENSHOTS_DIR"  # also copy the screenshots there (docs/screenshots)

# Logs a tick until the gate file exists: a job that runs as long as the test wants.
TICKER = '''
"""Log a tick every 0.2 s until the gate file exists."""
import asyncio
from pathlib import Path

async def main(job):
    gate = Path(job.params["gate"])
    n = 0
    while not gate.exists():
        n += 1
        job.log.info("tick", n=n)
        await asyncio.sleep(0.2)
    job.log.info("gate_opened", ticks=n)
'''
# Claims, copies the claimed file, waits for its gate, then reports (through the outbox).
GATED = '''
"""Claim, copy the claimed file, wait for the gate, report."""
import asyncio
from pathlib import Path
from aftd.script import claimed

async def main(job):
    async with claimed(job, job_id=job.params["job_id"]) as work:
        c = work.claim
        await work.src.copy_to(c.source_path, work.dst, c.dest_dir)
        gate = job.params.get("gate")
        while gate and not Path(gate).exists():
            await asyncio.sleep(0.05)
'''
# Logs a secret's value: the API masks it before the console sees it.
LEAKY = """
async def main(job):
    job.log.info("careless", token=await job.secret("orch-api-token"))
"""
# A pending report stays pending until "Retry now": the next automatic try is a minute away.
CONFIG = """
[reports]
initial_backoff_s = 60
max_backoff_s = 120
[jobs]
shutdown_grace_s = 0.5
[vfs.src]
type = "local"
root = "{src}"
[vfs.dst]
type = "local"
root = "{dst}"
[vfs.drop]
type = "local"
root = "{drop}"

# The Triggers page: a schedule that never comes due while the tests run (the 29th of
# February, in a zone with an odd offset) and a watch of the drop folder.
[[triggers]]
name = "leapday"
type = "schedule"
cron = "0 0 29 2 *"
timezone = "Asia/Kathmandu"
script = "hello"
params = {{ name = "leap" }}

[[triggers]]
name = "dropbox"
type = "watch"
vfs = "drop"
path = "in"
pattern = "*.csv"
stable_s = 0.5
script = "hello"

# A watch of a folder that is not there: the page shows it in error, with the reason (which
# names the folder, markup and all, as text).
[[triggers]]
name = "lost"
type = "watch"
vfs = "drop"
path = "<i>gone</i>"
poll_s = 0.5
script = "hello"
"""
KEYS = f"""
[[auth.api_keys]]
name = "operator"
sha256 = "{API_KEY_SHA256}"
[[auth.api_keys]]
name = "reader"
sha256 = "{hashlib.sha256(READER_KEY.encode()).hexdigest()}"
scopes = ["jobs:read"]
"""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def orch() -> AsyncIterator[Orchestrator]:
    o = Orchestrator(token="orch-console-token-5678")
    await o.start()
    yield o
    await o.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def daemon(tmp_path_factory: pytest.TempPathFactory,
                 orch: Orchestrator) -> AsyncIterator[DaemonProcess]:
    root = tmp_path_factory.mktemp("console")
    src, dst, drop = root / "src", root / "dst", root / "drop"
    src.mkdir()
    (dst / "in").mkdir(parents=True)
    (drop / "in").mkdir(parents=True)
    d = DaemonProcess(root / "daemon", scripts={"hello": HELLO, "ticker": TICKER,
                                                "gated": GATED, "leaky": LEAKY},
                      api_keys=textwrap.dedent(KEYS),
                      extra_config=textwrap.dedent(CONFIG.format(src=src, dst=dst, drop=drop)),
                      env={"AFTD_SECRET_ORCH_API_URL": orch.url,
                           "AFTD_SECRET_ORCH_API_TOKEN": orch.token})
    await d.start()
    yield d
    d.stop()


@pytest.fixture(scope="module")
def drop_dir(daemon: DaemonProcess) -> Path:
    """The watched folder of the ``dropbox`` trigger."""
    return daemon.root.parent / "drop" / "in"


@pytest.fixture(scope="module")
def src_dir(daemon: DaemonProcess) -> Path:
    return daemon.root.parent / "src"


def _chromium() -> str:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    return CHROMIUM


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Any]:
    """One Chromium for the module; each test opens a context (its own cookies) in it."""
    path = _chromium()
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield b
        await b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Any, str], Awaitable[Path]]:
    """``await shots(page, "jobs")`` saves a screenshot under the test run's tmp path (and in
    ``$AFTD_SCREENSHOTS_DIR`` when set, to refresh docs/screenshots)."""
    folder = tmp_path_factory.mktemp("screenshots")
    extra = os.environ.get(SHOTS_ENV)

    async def save(page: Any, name: str) -> Path:
        path = folder / f"{name}.png"
        await page.screenshot(path=str(path), full_page=True)
        if extra:
            Path(extra).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, Path(extra) / path.name)
        return path

    return save


__all__ = ["API_KEY", "READER_KEY"]
