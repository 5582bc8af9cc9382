"""Schedule triggers in the real daemon: every_s = 1, overlap policies, restarts between due
times, cron in a time zone that is not UTC, pause / resume / run from the CLI."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.fixtures.daemon import Api, DaemonProcess
from tests.triggers.helpers import SCRIPTS, aft, jobs_of, schedule, trigger_status, wait_jobs


def _t(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _overlaps(jobs: list[dict[str, Any]]) -> bool:
    spans = sorted((_t(j["startedAt"]), _t(j["finishedAt"])) for j in jobs if j["startedAt"])
    return any(b[0] < a[1] for a, b in itertools.pairwise(spans))


async def test_every_second_with_each_overlap_policy(make_daemon: Callable[..., Any]) -> None:
    slow = {"sleep": 2.2}
    d = await make_daemon(scripts=SCRIPTS, extra_config="".join(
        schedule(n, every_s=1, overlap=n, params=slow) for n in ("skip", "queue", "allow")))
    api = Api(d)
    try:
        await wait_jobs(api, "queue", 3, timeout=60)
        for name in ("skip", "queue", "allow"):
            assert aft(d, "trigger", "pause", name).returncode == 0
        await asyncio.sleep(3)  # let what runs end
        runs = {n: await jobs_of(api, n) for n in ("skip", "queue", "allow")}
        for name, jobs in runs.items():
            due = [j["params"]["scheduledAt"] for j in jobs]
            assert len(due) == len(set(due)), name  # one job per due time
            assert all(_t(s) == int(_t(s)) for s in due), due  # whole seconds
            assert all(j["params"]["sleep"] == 2.2 and j["trigger"] == name for j in jobs)
        assert not _overlaps(runs["skip"]) and not _overlaps(runs["queue"])
        assert _overlaps(runs["allow"])
        # skip dropped the due times that met a running job; allow ran them all.
        skip_span = _t(runs["skip"][-1]["params"]["scheduledAt"]) - _t(
            runs["skip"][0]["params"]["scheduledAt"])
        assert len(runs["skip"]) < skip_span + 1
        # queue ran its due times in order, one after the other.
        due = [j["params"]["scheduledAt"] for j in runs["queue"]]
        assert due == sorted(due)
        for name in ("skip", "queue", "allow"):
            assert (await trigger_status(api, name))["state"] == "paused"
    finally:
        await api.close()


async def test_a_restart_between_due_times_runs_the_missed_one_once(
        make_daemon: Callable[..., Any]) -> None:
    d = await make_daemon(scripts=SCRIPTS, extra_config=(
        schedule("tick", every_s=2, misfire_grace_s=300)
        + schedule("strict", every_s=2, misfire_grace_s=0)))
    api = Api(d)
    try:
        await wait_jobs(api, "tick", 1)
        await wait_jobs(api, "strict", 1)
        d.stop()
        before = {n: {_t(j["params"]["scheduledAt"]) for j in await _all(d, n)}
                  for n in ("tick", "strict")}
        await asyncio.sleep(4.5)  # at least two due times pass while the daemon is down
        await d.start()
        await wait_jobs(api, "tick", len(before["tick"]) + 2)
        for name in ("tick", "strict"):
            due = [_t(j["params"]["scheduledAt"]) for j in await jobs_of(api, name)]
            assert len(due) == len(set(due)), due  # never twice
            after = sorted(set(due) - before[name])
            # Due times were missed, and after the restart no gap opens again.
            assert after[0] - max(before[name]) >= 4, (before[name], after)
            assert after == [after[0] + 2 * i for i in range(len(after))], after
        logs = [json.loads(line) for line in d.logs().splitlines() if line.startswith("{")]
        ran = [e for e in logs if e["event"] == "trigger_misfire_run"]
        skipped = [e for e in logs if e["event"] == "trigger_misfire_skipped"]
        assert [e["trigger"] for e in ran] == ["tick"]  # once, for the latest missed due time
        assert [e["trigger"] for e in skipped] == ["strict"]
        assert _t(ran[0]["due"]) in await _dues(api, "tick")
    finally:
        await api.close()


async def _all(d: DaemonProcess, name: str) -> list[dict[str, Any]]:
    """The trigger's jobs, read while the daemon is stopped: start it, read, stop it again is
    too slow, so read the store the daemon left (its SQLite file)."""
    import sqlite3

    with sqlite3.connect(d.state_dir / "aftd.sqlite") as db:
        rows = db.execute("SELECT params FROM jobs WHERE trigger = ?", (name,)).fetchall()
    return [{"params": json.loads(r[0])} for r in rows]


async def _dues(api: Api, name: str) -> set[float]:
    return {_t(j["params"]["scheduledAt"]) for j in await jobs_of(api, name)}


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_cron_in_a_time_zone_with_an_odd_offset(make_daemon: Callable[..., Any]) -> None:
    """Kathmandu is UTC+5:45: the hour field matches only in local time, so a schedule that
    used UTC's hour (5 or 6 hours off) would never fire."""
    zone = ZoneInfo("Asia/Kathmandu")
    local = datetime.now(zone)
    hours = sorted({local.hour, (local + timedelta(minutes=2)).hour})
    cron = f"* {','.join(map(str, hours))} * * *"
    d = await make_daemon(scripts=SCRIPTS, extra_config=schedule(
        "kathmandu", cron=cron, timezone="Asia/Kathmandu"))
    api = Api(d)
    try:
        st = await trigger_status(api, "kathmandu")
        next_at = _t(st["nextFireAt"])
        assert next_at % 60 == 0 and 0 < next_at - time.time() <= 61
        assert st["settings"] == {"cron": cron, "everyS": None, "timezone": "Asia/Kathmandu",
                                  "overlap": "skip"}
        [job] = await wait_jobs(api, "kathmandu", 1, timeout=90)
        assert _t(job["params"]["scheduledAt"]) == next_at
        fired = datetime.fromtimestamp(next_at, UTC).astimezone(zone)
        assert fired.hour in hours and fired.second == 0
    finally:
        await api.close()


async def test_cli_lists_pauses_resumes_and_runs(make_daemon: Callable[..., Any]) -> None:
    d = await make_daemon(scripts=SCRIPTS, extra_config=schedule(
        "nightly", cron="0 2 * * *", timezone="Europe/Berlin", params={"region": "eu"}))
    api = Api(d)
    try:
        listing = aft(d, "triggers")
        assert listing.returncode == 0 and "nightly" in listing.stdout, listing
        rows = json.loads(aft(d, "triggers", "--json").stdout)["triggers"]
        assert [(r["name"], r["type"], r["state"]) for r in rows] == [
            ("nightly", "schedule", "active")]
        assert json.loads(aft(d, "trigger", "pause", "nightly").stdout)["state"] == "paused"
        assert (await trigger_status(api, "nightly"))["nextFireAt"] is None
        assert json.loads(aft(d, "trigger", "resume", "nightly").stdout)["state"] == "active"
        run = json.loads(aft(d, "trigger", "run", "nightly").stdout)
        assert run["outcome"] == "submitted" and run["jobId"]
        job = await api.wait_job(run["jobId"])
        assert job["trigger"] == "nightly" and job["params"]["region"] == "eu"
        bad = aft(d, "trigger", "run", "nope")
        assert bad.returncode == 1 and "unknown_trigger" in bad.stderr
        # The pause is durable: it holds across a restart.
        aft(d, "trigger", "pause", "nightly")
        d.stop()
        await d.start()
        assert (await trigger_status(api, "nightly"))["state"] == "paused"
    finally:
        await api.close()
