"""SIGHUP adds, removes and changes triggers without losing their state; a bad trigger is
refused naming its key; a missing directory is an error the trigger recovers from."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.fixtures.daemon import Api
from tests.triggers.helpers import (
    SCRIPTS,
    jobs_of,
    local_vfs,
    schedule,
    wait_jobs,
    wait_status,
    watch,
)


async def test_sighup_adds_removes_and_changes_triggers_keeping_their_state(
        make_daemon: Callable[..., Any], tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    vfs = local_vfs("one", one) + local_vfs("two", two)
    d = await make_daemon(scripts=SCRIPTS, extra_config=vfs + watch("w1", "one", pattern="*.csv")
                          + schedule("gone", every_s=1))
    api = Api(d)
    try:
        (one / "a.csv").write_text("a")
        (one / "b.txt").write_text("b")
        await wait_jobs(api, "w1", 1)
        await wait_jobs(api, "gone", 1)
        base = d.config_path.read_text().split("[[triggers]]")[0]
        d.config_path.write_text(base + watch("w1", "one", pattern="*", stable_s=0.5)
                                 + watch("w2", "two"))
        d.signal(signal.SIGHUP)
        await d.wait_for_log("config_reloaded")
        gone = len(await jobs_of(api, "gone"))
        (two / "c.dat").write_text("c")
        await wait_jobs(api, "w2", 1)
        jobs = await wait_jobs(api, "w1", 2)  # b.txt now matches; a.csv does not fire again
        await asyncio.sleep(2)
        assert sorted(j["params"]["path"] for j in await jobs_of(api, "w1")) == ["a.csv", "b.txt"]
        assert len(await jobs_of(api, "gone")) <= gone + 1  # one may have been under way
        status, body = await api.request("GET", "/v1/triggers/gone")
        assert status == 404 and body["error"]["code"] == "unknown_trigger"
        assert {j["params"]["path"] for j in jobs} == {"a.csv", "b.txt"}

        d.config_path.write_text(d.config_path.read_text() + schedule("bad", cron="0 25 * * *"))
        d.signal(signal.SIGHUP)
        await d.wait_for_log("reload_refused")
        assert "triggers[2].cron" in d.logs()
        assert (await api.request("GET", "/v1/triggers/w2"))[0] == 200  # the old config holds
    finally:
        await api.close()


async def test_a_missing_directory_is_an_error_until_it_appears(
        make_daemon: Callable[..., Any], tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    d = await make_daemon(scripts=SCRIPTS, extra_config=local_vfs("root", root)
                          + watch("later", "root", path="incoming")
                          + schedule("beat", every_s=1))
    api = Api(d)
    try:
        st = await wait_status(api, "later", lambda s: s["state"] == "error")
        assert "incoming" in st["lastError"]
        await wait_jobs(api, "beat", 2)  # the others carry on
        (root / "incoming").mkdir()
        (root / "incoming" / "x.csv").write_text("x")
        [job] = await wait_jobs(api, "later", 1, timeout=90)
        assert job["params"]["path"] == "incoming/x.csv"
        await wait_status(api, "later", lambda s: s["state"] == "active" and not s["lastError"])
        assert '"trigger_failed"' in d.logs() and '"trigger_recovered"' in d.logs()
    finally:
        await api.close()
