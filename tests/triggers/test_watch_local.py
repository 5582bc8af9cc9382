"""Watch triggers on a local folder: inotify and the polling fallback, stability, temp names,
after = move | delete on success only, failed files, retry."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.daemon import Api
from tests.triggers.helpers import SCRIPTS, aft, jobs_of, local_vfs, wait_jobs, wait_status, watch


@pytest.mark.parametrize("mode", ["inotify", "poll"])
async def test_a_dropped_file_fires_one_job_with_its_identity(
        make_daemon: Callable[..., Any], tmp_path: Path, mode: str) -> None:
    inbox = tmp_path / "drop" / "in"
    inbox.mkdir(parents=True)
    d = await make_daemon(scripts=SCRIPTS, extra_config=local_vfs("drop", tmp_path / "drop")
                          + watch("w", "drop", path="in", pattern="*.csv", mode=mode,
                                  params={"dest": "archive"}))
    api = Api(d)
    try:
        (inbox / "a.csv").write_text("hello")
        for name in ("b.csv.part", "c.tmp", ".hidden.csv", ".~lock.csv", "d.txt"):
            (inbox / name).write_text("ignored")
        jobs = await wait_jobs(api, "w", 1)
        await asyncio.sleep(2.5)  # time for any wrong second fire
        jobs = await jobs_of(api, "w")
        assert len(jobs) == 1, jobs
        st = os.stat(inbox / "a.csv")
        params = jobs[0]["params"]
        assert params == {"dest": "archive", "trigger": "w", "vfs": "drop", "path": "in/a.csv",
                          "size": 5, "mtime": st.st_mtime}
        assert jobs[0]["trigger"] == "w" and jobs[0]["status"] == "succeeded"
        status, body = await api.request("GET", "/v1/triggers/w")
        assert status == 200 and body["settings"]["mode"] == mode, body
    finally:
        await api.close()


async def test_a_slowly_written_file_fires_once_after_it_is_stable(
        make_daemon: Callable[..., Any], tmp_path: Path) -> None:
    """With inotify: the events of each append are no reason to fire; the stability check is."""
    mode, stable_s, appends = "inotify", 3.0, 15
    drop = tmp_path / "drop"
    drop.mkdir()
    d = await make_daemon(scripts=SCRIPTS, extra_config=local_vfs("drop", drop)
                          + watch("slow", "drop", mode=mode, stable_s=stable_s))
    api = Api(d)
    try:
        target = drop / "big.dat"
        written: list[float] = []
        with target.open("wb") as f:
            for _ in range(appends):  # 4.5 s of appends, 0.3 s apart: far inside stable_s
                written.append(time.time())  # before: the daemon cannot see it earlier
                f.write(b"x" * 1000)
                f.flush()
                await asyncio.sleep(0.3)
        # The premise: this process was never stalled for stable_s between two appends (a
        # fire of part of the file would then be right).
        gap = max(b - a for a, b in itertools.pairwise(written))
        assert gap < stable_s, f"the writer stalled {gap:.1f} s between appends"
        [job] = await wait_jobs(api, "slow", 1)
        await asyncio.sleep(2.5)  # time for any wrong second fire
        assert len(await jobs_of(api, "slow")) == 1
        assert job["params"]["size"] == appends * 1000  # the whole file, not a part of it
        created = datetime.fromisoformat(job["createdAt"].replace("Z", "+00:00")).timestamp()
        # Fired only once the file had stayed unchanged for stable_s after its last append
        # (10 ms for createdAt's millisecond resolution and clock slew).
        assert created >= written[-1] + stable_s - 0.01, (created - written[-1], job)
    finally:
        await api.close()


async def test_after_move_and_delete_run_on_success_only_and_failures_wait(
        make_daemon: Callable[..., Any], tmp_path: Path) -> None:
    root = tmp_path / "root"
    for sub in ("mv", "rm"):
        (root / sub).mkdir(parents=True)
        for name in ("good.csv", "bad.csv"):
            (root / sub / name).write_text(name)
    d = await make_daemon(scripts=SCRIPTS, extra_config=local_vfs("root", root)
                          + watch("mv", "root", path="mv", script="picky", after="move",
                                  move_to="done/mv")
                          + watch("rm", "root", path="rm", script="picky", after="delete"))
    api = Api(d)
    try:
        await wait_jobs(api, "mv", 2)
        await wait_jobs(api, "rm", 2)
        await _until(lambda: (root / "done" / "mv" / "good.csv").exists()
                     and not (root / "rm" / "good.csv").exists())
        assert not (root / "mv" / "good.csv").exists()
        assert (root / "mv" / "bad.csv").read_text() == "bad.csv"  # failed: left in place
        assert (root / "rm" / "bad.csv").exists()
        st = await wait_status(api, "mv", lambda s: s["failedFiles"])
        [failed] = st["failedFiles"]
        assert failed["path"] == "mv/bad.csv" and failed["attempt"] == 1
        assert "job failed" in failed["error"] and st["failedCount"] == 1
        await asyncio.sleep(2.5)  # a failed file does not fire again by itself
        assert len(await jobs_of(api, "mv")) == 2
        # aft trigger retry: a new attempt, at once.
        r = await asyncio.to_thread(aft, d, "trigger", "retry", "mv", "mv/bad.csv")
        assert r.returncode == 0, r.stderr
        retried = json.loads(r.stdout)
        assert retried["attempt"] == 2
        assert (await api.wait_job(retried["jobId"]))["status"] == "failed"
        gone = await asyncio.to_thread(aft, d, "trigger", "retry", "mv", "mv/good.csv")
        assert gone.returncode == 1 and "no failed fire" in gone.stderr
        # A changed file is a new version: it fires again by itself.
        with (root / "rm" / "bad.csv").open("a") as f:
            f.write("more")
        jobs = await wait_jobs(api, "rm", 3)
        assert [j["params"]["size"] for j in jobs if "bad" in j["params"]["path"]] == [7, 11]
        assert len(await jobs_of(api, "mv")) == 3
    finally:
        await api.close()


async def _until(pred: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not met"
        await asyncio.sleep(0.1)


async def test_a_file_name_that_is_not_utf8_fires_once(
        make_daemon: Callable[..., Any], tmp_path: Path) -> None:
    """Linux file names are bytes: one that is not UTF-8 fires one job like any other, and its
    path in the job's params gives back the same bytes (surrogate escapes, as os.listdir)."""
    inbox = tmp_path / "drop" / "in"
    inbox.mkdir(parents=True)
    d = await make_daemon(scripts=SCRIPTS, extra_config=local_vfs("drop", tmp_path / "drop")
                          + watch("odd", "drop", path="in", pattern="*.csv", mode="poll"))
    api = Api(d)
    try:
        with open(os.fsencode(inbox) + b"/b\xff.csv", "wb") as f:
            f.write(b"hello")
        [job] = await wait_jobs(api, "odd", 1)
        await asyncio.sleep(2.5)  # time for any wrong second fire
        [job] = await jobs_of(api, "odd")
        assert os.fsencode(job["params"]["path"]) == b"in/b\xff.csv", job
        assert job["status"] == "succeeded", job
    finally:
        await api.close()
