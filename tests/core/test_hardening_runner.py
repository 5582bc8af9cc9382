"""The runner against the real daemon: cancel at any moment, scripts that raise BaseException,
odd return values, timeouts, store errors while jobs start and finish."""

from __future__ import annotations

import asyncio
import itertools
import json
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.daemon import Api, DaemonProcess

BRIEF = '''
import asyncio, random
async def main(job):
    await asyncio.sleep(random.random() * 0.02)
'''

EXITS = '''
import asyncio, sys
async def main(job):
    how = job.params["how"]
    await asyncio.sleep(0)
    if how == "exit3":
        sys.exit(3)
    if how == "exit0":
        sys.exit(0)
    if how == "exitmsg":
        sys.exit("giving up")
    if how == "keyboard":
        raise KeyboardInterrupt
    if how == "generator":
        raise GeneratorExit
    if how == "str":
        return "done"
    if how == "float":
        return 1.5
    if how == "false":
        return False
'''

SLOW = '''
import asyncio
import itertools
async def main(job):
    await asyncio.sleep(float(job.params.get("sleep", 2)))
'''

FINALLY = '''
import asyncio
import itertools
from pathlib import Path
TIMEOUT_S = {script_timeout}
async def main(job):
    try:
        await asyncio.sleep(float(job.params.get("sleep", 60)))
    finally:
        Path(job.params["marker"]).write_text("finally ran")
'''

STUBBORN_TIMEOUT = '''
import asyncio
import itertools
async def main(job):
    for _ in range(3):
        try:  # longer than the job's 1 s timeout; short, as the job sleeps all three out
            await asyncio.sleep(3)
        except asyncio.CancelledError:
            pass  # swallowed: the timeout must still end the job
    return 0
'''


def _finished_lines(d: DaemonProcess) -> Counter[str]:
    counts: Counter[str] = Counter()
    for line in d.logs().splitlines():
        if '"job_finished"' in line:
            counts[json.loads(line)["job_id"]] += 1
    return counts


@pytest.mark.slow
async def test_trigger_cancel_storm_never_wedges_the_runner(make_daemon) -> None:  # type: ignore[no-untyped-def]
    """300 trigger+cancel pairs from 16 concurrent clients with max_concurrent = 1: every job
    ends exactly once, none stays queued, and the runner still runs jobs afterwards."""
    d: DaemonProcess = await make_daemon(scripts={"brief": BRIEF},
                                         extra_config="[jobs]\nmax_concurrent = 1\n")
    api = Api(d)
    ids: list[str] = []

    async def worker(n: int) -> None:
        for _ in range(n):
            status, job = await api.trigger("brief")
            assert status == 201, job
            ids.append(job["jobId"])
            status, body = await api.request("POST", f"/v1/jobs/{job['jobId']}/cancel")
            assert status in (200, 409), body

    try:
        await asyncio.gather(*(worker(19 if i < 12 else 18) for i in range(16)))
        assert len(ids) == 300
        _status, last = await api.trigger("brief")
        assert (await api.wait_job(last["jobId"], timeout=60))["status"] == "succeeded"
        finals = [(await api.wait_job(i, timeout=30))["status"] for i in ids]
        assert set(finals) <= {"cancelled", "succeeded"}, Counter(finals)
        assert "cancelled" in finals
        health = (await api.request("GET", "/v1/health"))[1]
        assert health["jobs"] == {"running": 0, "queued": 0}
    finally:
        await api.close()
    finished = _finished_lines(d)
    assert all(finished[i] == 1 for i in ids), [i for i in ids if finished[i] != 1][:5]


async def test_base_exceptions_fail_only_their_job(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d: DaemonProcess = await make_daemon(scripts={"exits": EXITS, "slow": SLOW})
    api = Api(d)
    try:
        _, bystander = await api.trigger("slow", {"sleep": "3"})
        expected = {
            "exit3": ("failed", 3, "code 3"), "exit0": ("succeeded", 0, None),
            "exitmsg": ("failed", 1, "giving up"), "keyboard": ("failed", None,
                                                                "KeyboardInterrupt"),
            "generator": ("failed", None, "GeneratorExit"),
            "str": ("failed", None, "main() returned str"),
            "float": ("failed", None, "main() returned float"),
            "false": ("failed", 1, "code 1"),
        }
        jobs = {how: (await api.trigger("exits", {"how": how}))[1]["jobId"] for how in expected}
        for how, (status, code, error) in expected.items():
            job = await api.wait_job(jobs[how])
            assert (job["status"], job["exitCode"]) == (status, code), (how, job)
            if error is None:
                assert job["error"] is None
            else:
                assert error in job["error"], (how, job)
        await _still_serving(api, d, bystander["jobId"])
    finally:
        await api.close()


async def _still_serving(api: Api, d: DaemonProcess, bystander: str) -> None:
    """The job that ran beside the broken ones succeeded, and the daemon still takes jobs."""
    assert (await api.wait_job(bystander))["status"] == "succeeded"
    assert d.proc is not None and d.proc.poll() is None
    status, _ = await api.trigger("slow", {"sleep": "0"})
    assert status == 201


SPAWNED_EXITS = '''
import asyncio, sys
async def boom(how):
    await asyncio.sleep(0)
    if how == "exit":
        sys.exit(3)
    raise KeyboardInterrupt
async def main(job):
    task = asyncio.create_task(boom(job.params["how"]))
    if job.params["await"] == "yes":
        await task
    else:
        await asyncio.sleep(0.3)
        job.log.info("survived", done=task.done())
'''


async def test_exits_in_tasks_a_script_started_fail_only_that_task(make_daemon) -> None:  # type: ignore[no-untyped-def]
    """asyncio re-raises SystemExit/KeyboardInterrupt out of the loop: a script's own task must
    not be able to end the daemon that way."""
    d: DaemonProcess = await make_daemon(scripts={"spawned": SPAWNED_EXITS, "slow": SLOW})
    api = Api(d)
    try:
        _, bystander = await api.trigger("slow", {"sleep": "2"})
        runs = {(how, aw): (await api.trigger("spawned", {"how": how, "await": aw}))[1]["jobId"]
                for how in ("exit", "keyboard") for aw in ("yes", "no")}
        for (_how, aw), job_id in runs.items():
            job = await api.wait_job(job_id)
            if aw == "yes":
                assert job["status"] == "failed", job
                assert "raised in a task the script started" in job["error"], job
            else:
                assert job["status"] == "succeeded", job
        await _still_serving(api, d, bystander["jobId"])
    finally:
        await api.close()


async def test_timeout_precedence_and_finally_blocks(make_daemon, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    d: DaemonProcess = await make_daemon(
        scripts={"declares": FINALLY.format(script_timeout="1"),
                 "plain": FINALLY.format(script_timeout="None").replace(
                     "TIMEOUT_S = None\n", ""),
                 "stubborn": STUBBORN_TIMEOUT},
        extra_config="[jobs]\ntimeout_s = 2\n")
    api = Api(d)
    try:
        def marker(name: str) -> str:
            return str(tmp_path / f"{name}.marker")

        _, by_config = await api.trigger("plain", {"marker": marker("config")})
        _, by_script = await api.trigger("declares", {"marker": marker("script")})
        status, by_trigger = await api.request("POST", "/v1/jobs", json={
            "scriptId": "declares", "params": {"marker": marker("trigger"), "sleep": 3},
            "timeoutS": 0.5})
        assert status == 201 and by_trigger["timeoutS"] == 0.5
        _, unlimited = await api.request("POST", "/v1/jobs", json={
            "scriptId": "declares", "params": {"marker": marker("none"), "sleep": 1.5},
            "timeoutS": 0})
        _, stubborn = await api.request("POST", "/v1/jobs", json={
            "scriptId": "stubborn", "timeoutS": 1})
        for job_id, limit, name in ((by_config["jobId"], "2 s", "config"),
                                    (by_script["jobId"], "1 s", "script"),
                                    (by_trigger["jobId"], "0.5 s", "trigger")):
            job = await api.wait_job(job_id)
            assert job["status"] == "failed", job
            assert f"timed out after {limit}" in job["error"], job
            assert Path(marker(name)).read_text() == "finally ran"
        job = await api.wait_job(unlimited["jobId"])
        assert job["status"] == "succeeded", job
        job = await api.wait_job(stubborn["jobId"])
        assert job["status"] == "failed" and "timed out after 1 s" in job["error"], job
        for bad in (-1, "5", True, None):
            status, err = await api.request("POST", "/v1/jobs", json={
                "scriptId": "plain", "timeoutS": bad})
            if bad is None:
                assert status == 201
            else:
                assert status == 400 and "timeoutS" in err["error"]["message"], err
        status, doc = await api.request("GET", "/v1/openapi.json")
        schemas = doc["components"]["schemas"]
        assert "timeoutS" in schemas["TriggerRequest"]["properties"]
        assert "timeoutS" in schemas["Job"]["properties"]
    finally:
        await api.close()


async def test_bad_script_timeout_fails_naming_it(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d: DaemonProcess = await make_daemon(scripts={"bad": 'TIMEOUT_S = "soon"\n'
                                                         'async def main(job):\n    pass\n'})
    api = Api(d)
    try:
        _, job = await api.trigger("bad")
        final = await api.wait_job(job["jobId"])
        assert final["status"] == "failed" and "TIMEOUT_S" in final["error"], final
    finally:
        await api.close()


def _hold_write_lock(db: Path) -> sqlite3.Connection:
    """An outside holder of the write lock, like a ``sqlite3`` shell inside BEGIN IMMEDIATE."""
    conn = sqlite3.connect(db, isolation_level=None, timeout=30)
    conn.execute("BEGIN IMMEDIATE")
    return conn


@pytest.mark.slow
async def test_locked_store_delays_writes_not_reads(make_daemon) -> None:  # type: ignore[no-untyped-def]
    """While an outside process holds the write lock, a trigger waits; health, metrics, job
    lookups and listings answer meanwhile."""
    d: DaemonProcess = await make_daemon(scripts={"slow": SLOW},
                                         extra_config="[store]\nbusy_timeout_s = 60\n")
    api = Api(d)
    try:
        _, old = await api.trigger("slow", {"sleep": "0"})
        await api.wait_job(old["jobId"])
        holder = _hold_write_lock(d.state_dir / "aftd.sqlite")
        try:
            trigger = asyncio.create_task(api.trigger("slow", {"sleep": "0"}))
            await asyncio.sleep(1.0)
            assert not trigger.done()  # the write waits for the lock ...
            for path in ("/v1/health", "/metrics", f"/v1/jobs/{old['jobId']}", "/v1/jobs",
                         f"/v1/jobs/{old['jobId']}/log", "/v1/scripts"):
                status, _ = await asyncio.wait_for(api.request("GET", path), 20)
                assert status == 200, path
            assert not trigger.done()  # ... and still did while every read answered
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        status, job = await asyncio.wait_for(trigger, 60)
        assert status == 201
        assert (await api.wait_job(job["jobId"]))["status"] == "succeeded"
    finally:
        await api.close()


@pytest.mark.slow
async def test_store_errors_while_jobs_start_and_finish_are_retried(make_daemon) -> None:  # type: ignore[no-untyped-def]
    """With a short busy timeout, writes fail while the lock is held: the finishing job's state
    and the next job's start are retried, the slot is freed, nothing is lost."""
    d: DaemonProcess = await make_daemon(
        scripts={"slow": SLOW},
        extra_config="[jobs]\nmax_concurrent = 1\n[store]\nbusy_timeout_s = 0.2\n")
    api = Api(d)
    try:
        _, first = await api.trigger("slow", {"sleep": "1"})
        _, second = await api.trigger("slow", {"sleep": "0"})
        await api.wait_job(first["jobId"], ("running",))
        holder = _hold_write_lock(d.state_dir / "aftd.sqlite")
        try:
            await d.wait_for_log('"job_store_retry"', timeout=30)
            # The first job's end is decided (and visible) though not yet stored.
            assert (await api.wait_job(first["jobId"]))["status"] == "succeeded"
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert (await api.wait_job(second["jobId"]))["status"] == "succeeded"
        _, third = await api.trigger("slow", {"sleep": "0"})
        assert (await api.wait_job(third["jobId"]))["status"] == "succeeded"
    finally:
        await api.close()
    # Stored, not only in memory: read the database itself.
    with sqlite3.connect(d.state_dir / "aftd.sqlite") as c:
        rows = dict(c.execute("SELECT id, status FROM jobs").fetchall())
    assert rows[first["jobId"]] == rows[second["jobId"]] == "succeeded"


async def _read_log(api: Api, job_id: str) -> list[dict[str, Any]]:
    status, body = await api.request("GET", f"/v1/jobs/{job_id}/log")
    assert status == 200
    return list(body["lines"])


async def _follow(api: Api, job_id: str) -> list[dict[str, Any]]:
    async with api.session.get(f"{api.daemon.url}/v1/jobs/{job_id}/log?follow=true",
                               headers=api.headers(), ssl=api.daemon.ssl_context()) as r:
        assert r.status == 200
        return [json.loads(line) async for line in r.content if line.strip()]


CHATTY = '''
import asyncio
from pathlib import Path
async def main(job):
    job.log.info("begin")
    gate = Path(job.params["gate"])
    while not gate.exists():
        await asyncio.sleep(0.02)
    for i in range(int(job.params["n"])):
        job.log.info("line", i=i)
    release = Path(job.params["release"])
    while not release.exists():
        await asyncio.sleep(0.02)
    job.log.info("end")
'''


@pytest.mark.slow
async def test_no_log_line_lost_silently(make_daemon, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A burst of lines while the store is locked: the buffer keeps the newest, a marker line
    counts the rest, the failed batch is written once the lock is gone, and the log endpoint
    and a follower see the same gap-free sequence."""
    d: DaemonProcess = await make_daemon(
        scripts={"chatty": CHATTY},
        extra_config="[jobs]\nlog_lines_per_job = 1000\n[store]\nbusy_timeout_s = 0.2\n")
    api = Api(d)
    gate, release = tmp_path / "gate", tmp_path / "release"
    n = 1500
    try:
        _, job = await api.trigger("chatty", {"gate": str(gate), "release": str(release),
                                              "n": n})
        job_id = job["jobId"]
        await api.wait_job(job_id, ("running",))
        while "begin" not in {line["event"] for line in await _read_log(api, job_id)}:
            await asyncio.sleep(0.05)
        follower = asyncio.create_task(_follow(api, job_id))
        holder = _hold_write_lock(d.state_dir / "aftd.sqlite")
        try:
            gate.touch()
            await d.wait_for_log('"job_flush_failed"', timeout=30)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        release.touch()
        assert (await api.wait_job(job_id))["status"] == "succeeded"
        followed = await asyncio.wait_for(follower, 60)
        stored = await _read_log(api, job_id)
    finally:
        await api.close()
    assert followed == stored
    assert [line["seq"] for line in stored] == list(range(1, len(stored) + 1))
    (marker,) = [line for line in stored if line["event"] == "log_lines_dropped"]
    kept = [line["i"] for line in stored if line["event"] == "line"]
    assert marker["count"] + len(kept) == n
    assert kept == list(range(n - len(kept), n))  # the newest lines were kept, in order
    assert {"begin", "end"} <= {line["event"] for line in stored}


async def test_many_lines_without_back_pressure_are_all_kept(make_daemon, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A script logging 20,000 lines in one go (faster than the flush interval) loses none."""
    d: DaemonProcess = await make_daemon(
        scripts={"chatty": CHATTY}, extra_config="[jobs]\nlog_lines_per_job = 50000\n")
    api = Api(d)
    gate, release = tmp_path / "gate", tmp_path / "release"
    gate.touch()
    release.touch()
    try:
        _, job = await api.trigger("chatty", {"gate": str(gate), "release": str(release),
                                              "n": 20000})
        assert (await api.wait_job(job["jobId"]))["status"] == "succeeded"
        lines = await _read_whole_log(api, job["jobId"])
    finally:
        await api.close()
    kept = [line["i"] for line in lines if line["event"] == "line"]
    others = [(line["seq"], line["event"]) for line in lines if line["event"] != "line"]
    # A compact message: a 20,000-row diff would bury the cause.
    assert kept == list(range(20000)), (
        f"{len(kept)} lines kept, missing {_ranges(set(range(20000)) - set(kept))}, "
        f"in order: {kept == sorted(kept)}, seq gaps: {_seq_gaps(lines)}, others: {others[:40]}")
    assert "log_lines_dropped" not in {event for _seq, event in others}


async def _read_whole_log(api: Api, job_id: str) -> list[dict[str, Any]]:
    """Every stored line, page after page (``nextAfter``) until the last."""
    lines: list[dict[str, Any]] = []
    after = 0
    while True:
        status, body = await api.request("GET", f"/v1/jobs/{job_id}/log?after={after}")
        assert status == 200, body
        lines += body["lines"]
        if body.get("nextAfter") is None:
            return lines
        after = body["nextAfter"]


def _ranges(values: set[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for v in sorted(values):
        if out and out[-1][1] == v - 1:
            out[-1] = (out[-1][0], v)
        else:
            out.append((v, v))
    return out[:20]


def _seq_gaps(lines: list[dict[str, Any]]) -> list[tuple[int, int]]:
    return [(a["seq"], b["seq"]) for a, b in itertools.pairwise(lines)
            if b["seq"] != a["seq"] + 1][:20]


async def test_cancel_queued_and_running_each_end_once(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d: DaemonProcess = await make_daemon(scripts={"slow": SLOW},
                                         extra_config="[jobs]\nmax_concurrent = 1\n")
    api = Api(d)
    try:
        _, running = await api.trigger("slow", {"sleep": "30"})
        _, queued = await api.trigger("slow", {"sleep": "0"})
        await api.wait_job(running["jobId"], ("running",))
        status, job = await api.request("POST", f"/v1/jobs/{queued['jobId']}/cancel")
        assert status == 200 and job["status"] == "cancelled"
        status, job = await api.request("POST", f"/v1/jobs/{running['jobId']}/cancel")
        assert status == 200 and job["status"] == "cancelled"
        for j in (running, queued):
            status, again = await api.request("POST", f"/v1/jobs/{j['jobId']}/cancel")
            assert status == 409, again
        _, after = await api.trigger("slow", {"sleep": "0"})
        assert (await api.wait_job(after["jobId"]))["status"] == "succeeded"
    finally:
        await api.close()
    deadline = time.monotonic() + 10
    while _finished_lines(d)[running["jobId"]] == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    finished = _finished_lines(d)
    assert finished[running["jobId"]] == finished[queued["jobId"]] == 1
