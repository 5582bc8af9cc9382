"""The outbox against a real orchestrator HTTP server: delivery, retries, abandonment,
durability across restarts, release of unsubmitted intents."""

from __future__ import annotations

import asyncio
import email.utils
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aftd.config import ReportsConfig
from aftd.errors import AftdError
from aftd.report.outbox import Outbox
from tests.fixtures.orchestrator import Orchestrator
from tests.report.conftest import MakeOutbox
from tests.report.helpers import wait_report


async def _intent(box: Outbox, orch: Orchestrator, job: str, orch_job: str, *,
            key: str | None = None) -> int:
    orch.add_job(orch_job)
    return await box.record_intent(job, url=f"{orch.url}/jobs/{orch_job}/report",
                             token_secret="orch-api-token",
                             failure_body={"jobId": orch_job, "status": "failed", "agent": "aftd"},
                             idempotency_key=key or f"key-{job}")


def _ok(orch_job: str) -> dict[str, str]:
    return {"jobId": orch_job, "status": "completed", "agent": "aftd"}


async def test_delivers_with_bearer_and_idempotency_key(orch: Orchestrator,
                                                        make_outbox: MakeOutbox) -> None:
    box = await make_outbox()
    rid = await _intent(box, orch, "j1", "o1")
    assert (await box.job_report("j1"))["state"] == "intent"  # type: ignore[index]
    await box.submit(rid, _ok("o1"))
    assert await orch.wait_reports("o1") == [_ok("o1")]
    rep = await wait_report(box, "j1", "delivered")
    assert rep["attempts"] == 1
    assert rep["lastStatus"] == 200
    assert rep["lastError"] is None
    assert rep["deliveredAt"].endswith("Z")
    assert rep["idempotencyKey"] == "key-j1"
    assert orch.accepted("key-j1") == 1
    assert orch.state.unauthorized == 0
    assert box.depth() == 0


async def test_503_three_times_then_delivered_once(orch: Orchestrator,
                                                   make_outbox: MakeOutbox) -> None:
    outcomes: list[str] = []
    box = await make_outbox(on_outcome=outcomes.append)
    orch.fail_reports(3, status=503)
    await box.submit(await _intent(box, orch, "j1", "o1"), _ok("o1"))
    rep = await wait_report(box, "j1", "delivered")
    attempts = orch.report_attempts("o1")
    assert [a.answered for a in attempts] == [503, 503, 503, 200]
    assert {a.key for a in attempts} == {"key-j1"}
    assert orch.accepted("key-j1") == 1
    assert rep["attempts"] == 4
    # What metrics are fed; the callback follows the stored outcome (another thread's commit).
    for _ in range(200):
        if len(outcomes) == 4:
            break
        await asyncio.sleep(0.01)
    assert outcomes == ["retry", "retry", "retry", "delivered"]


async def test_orchestrator_down_then_back(orch: Orchestrator, make_outbox: MakeOutbox) -> None:
    box = await make_outbox()
    rid = await _intent(box, orch, "j1", "o1")
    await orch.go_down()
    await box.submit(rid, _ok("o1"))
    rep = await wait_report(box, "j1", "pending", attempts=3)
    assert rep["lastStatus"] is None
    assert "cannot connect" in rep["lastError"]
    assert orch.url not in rep["lastError"]
    await orch.come_back()
    await wait_report(box, "j1", "delivered")
    assert orch.accepted("key-j1") == 1
    assert orch.reports("o1") == [_ok("o1")]


async def test_retry_after_seconds_is_honoured(orch: Orchestrator,
                                               make_outbox: MakeOutbox) -> None:
    # With a 0.05 s backoff the retry would come almost at once; Retry-After says 2 s.
    box = await make_outbox()
    orch.fail_reports(1, status=503, retry_after="2")
    await box.submit(await _intent(box, orch, "j1", "o1"), _ok("o1"))
    await wait_report(box, "j1", "delivered")
    first, second = orch.report_attempts("o1")
    assert (first.answered, second.answered) == (503, 200)
    assert second.at - first.at >= 1.9


async def test_retry_after_http_date_on_429(orch: Orchestrator,
                                            make_outbox: MakeOutbox) -> None:
    box = await make_outbox()
    # HTTP dates have whole seconds: now + 3 s is at least 2 s away.
    orch.fail_reports(1, status=429,
                      retry_after=email.utils.formatdate(time.time() + 3, usegmt=True))
    await box.submit(await _intent(box, orch, "j1", "o1"), _ok("o1"))
    await wait_report(box, "j1", "delivered")
    first, second = orch.report_attempts("o1")
    assert first.answered == 429
    assert second.at - first.at >= 1.5


async def test_client_error_abandons_at_once(orch: Orchestrator,
                                             make_outbox: MakeOutbox) -> None:
    box = await make_outbox()
    orch.fail_reports(1, status=422)
    await box.submit(await _intent(box, orch, "j1", "o1"), _ok("o1"))
    rep = await wait_report(box, "j1", "abandoned")
    assert rep["attempts"] == 1
    assert rep["lastStatus"] == 422
    assert "HTTP 422" in rep["lastError"]
    assert rep["deliveredAt"] is None
    # A later report goes through; the abandoned one was not tried again meanwhile.
    await box.submit(await _intent(box, orch, "j2", "o2"), _ok("o2"))
    await wait_report(box, "j2", "delivered")
    assert len(orch.report_attempts("o1")) == 1
    assert box.depth() == 0


async def test_wrong_token_is_a_401_and_abandons(orch: Orchestrator, make_outbox: MakeOutbox,
                                                 secret_env: dict[str, str]) -> None:
    secret_env["AFTD_SECRET_ORCH_API_TOKEN"] = "not-the-token"
    box = await make_outbox()
    await box.submit(await _intent(box, orch, "j1", "o1"), _ok("o1"))
    rep = await wait_report(box, "j1", "abandoned")
    assert rep["lastStatus"] == 401
    assert orch.state.unauthorized == 1


async def test_deadline_abandons(orch: Orchestrator, make_outbox: MakeOutbox) -> None:
    cfg = ReportsConfig(deadline_s=1.0, initial_backoff_s=0.1, max_backoff_s=0.2, timeout_s=5.0)
    box = await make_outbox(cfg)
    orch.fail_reports(1_000_000, status=500)
    await box.submit(await _intent(box, orch, "j1", "o1"), _ok("o1"))
    rep = await wait_report(box, "j1", "abandoned")
    assert rep["attempts"] >= 2
    assert rep["lastStatus"] == 500
    assert "deadline" in rep["lastError"]
    assert orch.accepted("key-j1") == 0
    assert rep["attempts"] == len(orch.report_attempts("o1"))


async def test_token_resolved_at_send_time_and_never_stored(
        orch: Orchestrator, make_outbox: MakeOutbox, secret_env: dict[str, str],
        db_path: Path) -> None:
    token = secret_env.pop("AFTD_SECRET_ORCH_API_TOKEN")
    box = await make_outbox()
    await box.submit(await _intent(box, orch, "j1", "o1"), _ok("o1"))
    rep = await wait_report(box, "j1", "pending", attempts=2)
    assert "token unavailable" in rep["lastError"]
    assert "orch-api-token" in rep["lastError"]
    assert orch.report_attempts("o1") == []  # nothing is sent without the token
    secret_env["AFTD_SECRET_ORCH_API_TOKEN"] = token
    await wait_report(box, "j1", "delivered")
    raw = b"".join(p.read_bytes() for p in db_path.parent.iterdir())
    assert token.encode() not in raw


async def test_restart_resends_with_same_key(orch: Orchestrator, make_outbox: MakeOutbox) -> None:
    first = await make_outbox()
    rid = await _intent(first, orch, "j1", "o1")
    await orch.go_down()
    await first.submit(rid, _ok("o1"))
    await wait_report(first, "j1", "pending", attempts=1)
    await first.aclose(flush_timeout_s=0.1)  # stands in for the daemon stopping

    await orch.come_back()
    second = await make_outbox()
    rep = await wait_report(second, "j1", "delivered")
    assert rep["idempotencyKey"] == "key-j1"
    assert rep["attempts"] >= 2  # attempts made before the restart were kept
    assert orch.accepted("key-j1") == 1
    assert orch.reports("o1") == [_ok("o1")]


async def test_release_job_finds_an_intent_whose_recorder_was_cancelled(
        orch: Orchestrator, make_outbox: MakeOutbox) -> None:
    """An intent's write commits even when its job is cancelled while waiting for it; the
    job's end must still release it (the outbox skips the store only for jobs that never
    began to record one)."""
    box = await make_outbox()
    assert await box.release_job("never") == 0
    recording = asyncio.ensure_future(_intent(box, orch, "j1", "o1"))
    await asyncio.sleep(0)  # the intent's write is queued ...
    recording.cancel()  # ... and its caller cancelled before the commit
    await asyncio.gather(recording, return_exceptions=True)
    assert await box.release_job("j1") == 1
    assert await orch.wait_reports("o1") == [{"jobId": "o1", "status": "failed",
                                              "agent": "aftd"}]


async def test_release_job_reports_failure_body(orch: Orchestrator,
                                                make_outbox: MakeOutbox) -> None:
    box = await make_outbox()
    rid = await _intent(box, orch, "j1", "o1")
    await _intent(box, orch, "j2", "o2")
    assert await box.release_job("j1") == 1
    assert await box.release_job("j1") == 0
    await orch.wait_reports("o1")
    await box.submit(rid, _ok("o1"))  # too late: the failure is already owed and sent
    await wait_report(box, "j1", "delivered")
    assert orch.reports("o1") == [{"jobId": "o1", "status": "failed", "agent": "aftd"}]
    assert (await box.job_report("j2"))["state"] == "intent"  # type: ignore[index]
    assert orch.report_attempts("o2") == []


async def test_release_all_intents_after_restart(orch: Orchestrator,
                                                 make_outbox: MakeOutbox) -> None:
    first = await make_outbox()
    await _intent(first, orch, "j1", "o1")
    await _intent(first, orch, "j2", "o2")
    await first.aclose()  # e.g. killed while both jobs ran: the intents stay
    second = await make_outbox()
    assert await second.release_all_intents() == 2
    failed = [{"jobId": o, "status": "failed", "agent": "aftd"} for o in ("o1", "o2")]
    assert [await orch.wait_reports(o) for o in ("o1", "o2")] == [[failed[0]], [failed[1]]]


async def test_same_key_is_one_report(orch: Orchestrator, make_outbox: MakeOutbox) -> None:
    box = await make_outbox()
    a = await _intent(box, orch, "j1", "o1", key="k")
    b = await _intent(box, orch, "j1", "o1", key="k")
    assert a == b
    await box.submit(a, _ok("o1"))
    await box.submit(b, _ok("o1"))
    await wait_report(box, "j1", "delivered")
    assert len(orch.report_attempts("o1")) == 1


async def test_many_reports_bounded_concurrency(orch: Orchestrator,
                                                make_outbox: MakeOutbox) -> None:
    box = await make_outbox(max_in_flight=8)
    orch.fail_reports(50, status=503)
    ids = [await _intent(box, orch, f"j{i}", f"o{i}") for i in range(300)]
    for i, rid in enumerate(ids):
        await box.submit(rid, _ok(f"o{i}"))
    for i in range(300):
        await orch.wait_reports(f"o{i}")
    await asyncio.gather(*(wait_report(box, f"j{i}", "delivered") for i in range(300)))
    assert all(orch.accepted(f"key-j{i}") == 1 for i in range(300))
    assert sum(orch.state.accepted.values()) == 300
    assert box.depth() == 0
    states = [(await box.job_report(f"j{i}") or {}).get("state") for i in range(300)]
    assert states == ["delivered"] * 300


async def test_unknown_job_and_unknown_report(make_outbox: MakeOutbox) -> None:
    box = await make_outbox()
    assert await box.job_report("nope") is None
    assert box.depth() == 0
    with pytest.raises(AftdError, match="12345"):
        await box.submit(12345, {"x": 1})


_CHILD = """
import asyncio, sys
from pathlib import Path
from aftd.config import ReportsConfig
from aftd.report.outbox import Outbox

class NoSecrets:
    async def get(self, name):
        raise KeyError(name)

async def main():
    box = Outbox(Path(sys.argv[1]), ReportsConfig(initial_backoff_s=0.05), NoSecrets())
    await box.start()
    body = {"jobId": "o1", "status": "completed", "agent": "aftd"}
    rid = await box.record_intent("j1", url=sys.argv[2], token_secret=None,
                            failure_body={**body, "status": "failed"}, idempotency_key="kill-key")
    await box.submit(rid, body)
    rid2 = await box.record_intent("j2", url=sys.argv[3], token_secret=None,
                             failure_body={"jobId": "o2", "status": "failed", "agent": "aftd"},
                             idempotency_key="kill-key-2")
    print("ready", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_kill_9_then_new_outbox_delivers(orch: Orchestrator, make_outbox: MakeOutbox,
                                               db_path: Path) -> None:
    """A process killed with SIGKILL after submit (one report) and after record_intent (another):
    a new outbox on the same file delivers the first and, once intents are released, the second
    as failed, each once by idempotency key."""
    orch.add_job("o1")
    orch.add_job("o2")
    await orch.go_down()
    db_path.parent.mkdir(parents=True, exist_ok=True)
    root = str(Path(__file__).resolve().parents[2])
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(db_path), f"{orch.url}/jobs/o1/report",
         f"{orch.url}/jobs/o2/report"],
        stdout=subprocess.PIPE, cwd=root, env={**os.environ, "PYTHONPATH": root})
    assert proc.stdout is not None
    lines = []
    while not lines or lines[-1] not in (b"ready", b""):  # structlog also prints to stdout
        lines.append((await asyncio.to_thread(proc.stdout.readline)).strip())
    assert lines[-1] == b"ready", lines
    os.kill(proc.pid, signal.SIGKILL)
    await asyncio.to_thread(proc.wait)
    proc.stdout.close()

    await orch.come_back()
    # The fixture's resolver has the right token; the child sent none (token_secret=None).
    orch.token_required = False
    box = await make_outbox()
    assert await box.release_all_intents() == 1
    await wait_report(box, "j1", "delivered")
    await wait_report(box, "j2", "delivered")
    assert orch.accepted("kill-key") == 1
    assert orch.accepted("kill-key-2") == 1
    assert orch.reports("o1") == [{"jobId": "o1", "status": "completed", "agent": "aftd"}]
    assert orch.reports("o2") == [{"jobId": "o2", "status": "failed", "agent": "aftd"}]


async def test_prune_keeps_unfinished_reports(orch: Orchestrator,
                                              make_outbox: MakeOutbox) -> None:
    box = await make_outbox()
    await box.submit(await _intent(box, orch, "j1", "o1"), _ok("o1"))
    await wait_report(box, "j1", "delivered")
    await _intent(box, orch, "j2", "o2")
    await orch.go_down()
    await box.submit(await _intent(box, orch, "j3", "o3"), _ok("o3"))
    await wait_report(box, "j3", "pending", attempts=1)
    assert await box.prune(time.time() + 1) == 1
    assert await box.job_report("j1") is None
    assert (await box.job_report("j2"))["state"] == "intent"  # type: ignore[index]
    assert (await box.job_report("j3"))["state"] == "pending"  # type: ignore[index]
