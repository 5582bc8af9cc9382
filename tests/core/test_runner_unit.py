"""The runner in-process, on a real SQLite job store: what a reader of a job gets."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aftd.config import JobsConfig
from aftd.jobs.model import JobState
from aftd.jobs.runner import Runner
from aftd.jobs.store import JobStore
from aftd.scripts.context import Services
from aftd.scripts.loader import ScriptLoader
from aftd.secrets.chain import SecretChain
from aftd.secrets.config import SecretsConfig
from aftd.secrets.env import EnvProvider
from aftd.vfs.registry import VfsPool

GATED = '''
import asyncio
from pathlib import Path

async def main(job):
    while not Path(job.params["gate"]).exists():
        await asyncio.sleep(0.02)
    return 0
'''


@pytest.fixture
async def runner(tmp_path: Path) -> AsyncIterator[Runner]:
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "gated.py").write_text(GATED)
    store = JobStore(tmp_path / "aftd.sqlite")
    await store.open()
    chain = SecretChain(SecretsConfig(order=("env",), cache_ttl_s=0.0),
                        providers=[EnvProvider({})])
    r = Runner(store, ScriptLoader(scripts), Services(secrets=chain, vfs=VfsPool({}, chain)),
               JobsConfig())
    await r.start()
    yield r
    await r.drain(grace_s=5)
    await chain.aclose()
    await store.close()


async def _until_status(runner: Runner, job_id: str, *states: JobState) -> None:
    deadline = time.monotonic() + 60
    while True:
        job = await runner.get(job_id)
        if job is not None and job.status in states:
            return
        assert time.monotonic() < deadline, f"job {job_id} never reached {states}: {job}"
        await asyncio.sleep(0.02)


async def test_a_job_read_while_it_runs_keeps_the_state_it_was_read_in(
        runner: Runner, tmp_path: Path) -> None:
    """The API reads a job, then awaits its report before it answers: the end decided in that
    await must not show in the answer, whose client would then read a log whose last lines are
    not stored yet (CI saw a succeeded job with an empty log)."""
    gate = tmp_path / "gate"
    job, _ = await runner.submit(runner.loader.find(script_id="gated"), {"gate": str(gate)})
    await _until_status(runner, job.id, JobState.RUNNING)
    seen = await runner.get(job.id)
    assert seen is not None
    gate.touch()
    await _until_status(runner, job.id, JobState.SUCCEEDED)
    assert (seen.status, seen.finished_at, seen.exit_code) == (JobState.RUNNING, None, None)
