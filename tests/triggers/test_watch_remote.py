"""A watch on a remote folder (SFTP, the test sshd), polled through the VFS protocol; an
unreachable VFS shows as `error` while the other triggers go on; the trigger metrics."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

from tests.fixtures.daemon import Api
from tests.fixtures.procs import free_port
from tests.fixtures.sshd import SshdServer
from tests.triggers.helpers import SCRIPTS, jobs_of, table, wait_jobs, wait_status, watch


def sftp_vfs(name: str, srv: SshdServer, **extra: Any) -> str:
    return table(**srv.vfs_options(**extra)).replace("[[triggers]]", f"[vfs.{name}]")


async def test_a_remote_folder_fires_moves_and_reports_an_unreachable_one(
        make_daemon: Callable[..., Any], sshd_triggers: SshdServer, tmp_path: Any) -> None:
    base = sshd_triggers.root / tmp_path.name
    (base / "outbound").mkdir(parents=True)
    config = (sftp_vfs("partner", sshd_triggers, root=str(base))
              + sftp_vfs("dead", sshd_triggers, port=free_port(), connect_timeout_s=1)
              + watch("remote", "partner", path="outbound", pattern="*.csv", after="move",
                      move_to="done")
              + watch("unreachable", "dead", path="x"))
    d = await make_daemon(scripts=SCRIPTS, extra_config=config,
                          env={"AFTD_SECRET_SSHD_KEY": sshd_triggers.user_key_text})
    api = Api(d)
    try:
        for i in range(3):
            (base / "outbound" / f"r{i}.csv").write_text("x" * (i + 1))
        (base / "outbound" / "r9.csv.part").write_text("uploading")
        jobs = await wait_jobs(api, "remote", 3)
        assert sorted(j["params"]["path"] for j in jobs) == [
            f"outbound/r{i}.csv" for i in range(3)]
        assert sorted(j["params"]["size"] for j in jobs) == [1, 2, 3]
        assert all(j["params"]["vfs"] == "partner" for j in jobs)
        for _ in range(100):  # moved once their jobs succeeded
            if sorted(p.name for p in (base / "done").glob("*")) == ["r0.csv", "r1.csv",
                                                                    "r2.csv"]:
                break
            await asyncio.sleep(0.1)
        assert sorted(p.name for p in (base / "outbound").iterdir()) == ["r9.csv.part"]
        remote = await wait_status(api, "remote", lambda s: s["state"] == "active")
        assert remote["settings"]["mode"] == "poll"
        dead = await wait_status(api, "unreachable", lambda s: s["state"] == "error")
        assert "dead" in dead["lastError"]
        (base / "outbound" / "late.csv").write_text("late")  # the others carry on
        await wait_jobs(api, "remote", 4)
        status, metrics = await api.request("GET", "/metrics")
        assert status == 200
        assert re.search(r'aftd_trigger_fires_total\{trigger="remote"\} 4\.0', metrics)
        errors = re.search(r'aftd_trigger_errors_total\{trigger="unreachable"\} (\S+)', metrics)
        assert errors and float(errors.group(1)) >= 1
        assert re.search(r'aftd_watch_poll_duration_seconds_count\{trigger="remote"\} [1-9]',
                         metrics)
        assert 'aftd_trigger_files_pending{trigger="remote"} 0.0' in metrics
        listed = await api.request("GET", "/v1/triggers")
        assert {t["name"]: t["state"] for t in listed[1]["triggers"]} == {
            "remote": "active", "unreachable": "error"}
        assert len(await jobs_of(api, "unreachable")) == 0
    finally:
        await api.close()
