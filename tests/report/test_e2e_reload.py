"""Reports keep flowing after a SIGHUP config reload (which replaces the secret chain)."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.fixtures.daemon import Api
from tests.fixtures.orchestrator import Orchestrator
from tests.report.e2e import daemon_for, wait_delivered


async def test_report_delivered_after_reload(make_daemon: Callable[..., Any],
                                             orch: Orchestrator, tmp_path: Path) -> None:
    d, src, _ = await daemon_for(make_daemon, orch, tmp_path)
    (src / "o1.dat").write_bytes(b"x")
    orch.add_job("o1")
    api = Api(d)
    try:
        d.signal(signal.SIGHUP)
        await d.wait_for_log("config_reloaded")
        status, body = await api.trigger("claim_transfer_report",
                                         [{"name": "job_id", "value": "o1"}])
        assert status == 201, body
        assert (await api.wait_job(body["jobId"]))["status"] == "succeeded"
        job = await wait_delivered(api, body["jobId"], timeout=15)
    finally:
        await api.close()
    assert job["report"]["state"] == "delivered"
    assert orch.reports("o1") == [{"jobId": "o1", "status": "completed", "agent": "aftd"}]
