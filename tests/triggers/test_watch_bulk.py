"""Many files at once: 1,000 files fire 1,000 jobs; a kill -9 mid-stream and a restart fire
the remaining files only."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.daemon import Api
from tests.triggers.helpers import SCRIPTS, jobs_of, local_vfs, wait_jobs, watch

JOBS = "[jobs]\nmax_concurrent = 16\n"


def drop_files(directory: Path, n: int) -> set[str]:
    for i in range(n):
        (directory / f"f{i:04d}.csv").write_text(str(i))
    return {f"in/f{i:04d}.csv" for i in range(n)}


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_a_thousand_files_fire_a_thousand_jobs(make_daemon: Callable[..., Any],
                                                     tmp_path: Path) -> None:
    inbox = tmp_path / "drop" / "in"
    inbox.mkdir(parents=True)
    d = await make_daemon(scripts=SCRIPTS, extra_config=JOBS + local_vfs("drop", tmp_path / "drop")
                          + watch("bulk", "drop", path="in", stable_s=1))
    api = Api(d)
    try:
        paths = drop_files(inbox, 1000)
        await wait_jobs(api, "bulk", 1000, timeout=180)
        await asyncio.sleep(3)  # a poll or two more: nothing fires twice
        jobs = await jobs_of(api, "bulk", params=True)
        assert Counter(j["params"]["path"] for j in jobs) == Counter(paths)
        assert all(j["status"] == "succeeded" for j in jobs)
    finally:
        await api.close()


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_kill_9_mid_stream_then_restart_fires_the_remaining_files_only(
        make_daemon: Callable[..., Any], tmp_path: Path) -> None:
    inbox = tmp_path / "drop" / "in"
    inbox.mkdir(parents=True)
    d = await make_daemon(scripts=SCRIPTS, extra_config=JOBS + local_vfs("drop", tmp_path / "drop")
                          + watch("bulk", "drop", path="in", stable_s=0.5,
                                  params={"sleep": 0.05}))
    api = Api(d)
    try:
        paths = drop_files(inbox, 600)
        await wait_jobs(api, "bulk", 50, final=False, timeout=120)
        d.kill9()
        before = len(await _stored_jobs(d))
        assert 0 < before < 600, before  # killed mid-stream
        await d.start()
        jobs = await wait_jobs(api, "bulk", 600, timeout=180)
        await asyncio.sleep(2)
        jobs = await jobs_of(api, "bulk")
        assert Counter(j["params"]["path"] for j in jobs) == Counter(paths)  # each once
        states = Counter(j["status"] for j in jobs)
        assert set(states) <= {"succeeded", "interrupted"}, states  # running at the kill
    finally:
        await api.close()


async def _stored_jobs(d: Any) -> list[str]:
    import sqlite3

    with sqlite3.connect(d.state_dir / "aftd.sqlite") as db:
        return [r[0] for r in db.execute("SELECT id FROM jobs WHERE trigger = 'bulk'")]
