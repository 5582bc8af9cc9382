"""The report guarantee under store faults, against the real daemon and orchestrator: the
intent is durable before the claim leaves; a claim whose outcome is unknown is reported failed;
a timed-out claimed job reports failed; a delivery whose outcome cannot be recorded is not
POSTed again in a hot loop.

Faults: an outside holder of the SQLite write lock (like a ``sqlite3`` shell) and a full disk
(the state dir on a 2 MiB tmpfs filled to the last byte; see tests/fixtures/diskfull.py)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.daemon import Api, DaemonProcess
from tests.fixtures.diskfull import fill
from tests.fixtures.orchestrator import Orchestrator
from tests.report.e2e import BUNDLED, GATED, wait_delivered

MakeDaemon = Callable[..., Any]

# Waits for a gate file before the claim: the test puts the fault in place first.
GATE_FIRST = '''
import asyncio
from pathlib import Path
from aftd.report.workflow import claim_transfer_report

async def main(job):
    gate = Path(job.params["gate"])
    while not gate.exists():
        await asyncio.sleep(0.05)
    return await claim_transfer_report(job, job_id=job.params["job_id"])
'''


def _failed(o: str) -> dict[str, str]:
    return {"jobId": o, "status": "failed", "agent": "aftd"}


async def _daemon(make_daemon: MakeDaemon, orch: Orchestrator, root: Path,
                  state_on: Path | None = None) -> tuple[DaemonProcess, Path]:
    """A daemon with local VFS src/dst, a short busy timeout and fast report retries; its
    state dir on ``state_on`` when given."""
    src, dst = root / "src", root / "dst"
    src.mkdir(parents=True)
    (dst / "in").mkdir(parents=True)
    d: DaemonProcess = await make_daemon(
        start=False,
        scripts={"claim_transfer_report": BUNDLED, "gated": GATED, "gate_first": GATE_FIRST},
        extra_config=f"""
[reports]
initial_backoff_s = 0.2
max_backoff_s = 1.0
[store]
busy_timeout_s = 0.3
[vfs.src]
type = "local"
root = "{src}"
[vfs.dst]
type = "local"
root = "{dst}"
""", env={"AFTD_SECRET_ORCH_API_URL": orch.url, "AFTD_SECRET_ORCH_API_TOKEN": orch.token})
    if state_on is not None:
        (state_on / "state").mkdir()
        d.state_dir.symlink_to(state_on / "state")
    await d.start()
    return d, src


async def _claim_in_flight(api: Api, orch: Orchestrator, src: Path,
                           job_id: str) -> dict[str, Any]:
    """Trigger the workflow for ``job_id`` (a file to copy in ``src``); return the job once its
    claim has reached the orchestrator, which holds the answer until ``orch.claim_hold`` is set."""
    orch.add_job(job_id)
    (src / f"{job_id}.dat").write_bytes(b"payload")
    orch.claim_hold = asyncio.Event()
    _, job = await api.trigger("claim_transfer_report", {"job_id": job_id})
    while orch.claims(job_id) == 0:
        await asyncio.sleep(0.05)
    return dict(job)


class Fault:
    """The store fault a test applies and removes: ``locked`` or ``full``."""

    def __init__(self, kind: str, d: DaemonProcess, tiny: Path | None) -> None:
        self.kind = kind
        self.d = d
        self.tiny = tiny
        self._holder: sqlite3.Connection | None = None
        self._filler: Path | None = None

    def apply(self) -> None:
        if self.kind == "locked":
            self._holder = sqlite3.connect(self.d.state_dir / "aftd.sqlite",
                                           isolation_level=None, timeout=30)
            self._holder.execute("BEGIN IMMEDIATE")
        else:
            assert self.tiny is not None
            self._filler = fill(self.tiny)

    def remove(self) -> None:
        if self._holder is not None:
            self._holder.execute("ROLLBACK")
            self._holder.close()
            self._holder = None
        if self._filler is not None:
            self._filler.unlink()
            self._filler = None


@pytest.fixture(params=["locked", "full"])
async def faulty(request: pytest.FixtureRequest, make_daemon: MakeDaemon, orch: Orchestrator,
                 tmp_path: Path) -> AsyncIterator[tuple[DaemonProcess, Path, Fault]]:
    tiny = request.getfixturevalue("tiny_fs") if request.param == "full" else None
    d, src = await _daemon(make_daemon, orch, tmp_path, state_on=tiny)
    fault = Fault(request.param, d, tiny)
    try:
        yield d, src, fault
    finally:
        fault.remove()


@contextlib.contextmanager
def _applied(fault: Fault) -> Iterator[None]:
    fault.apply()
    try:
        yield
    finally:
        fault.remove()


@pytest.mark.slow
async def test_no_intent_no_claim(faulty: tuple[DaemonProcess, Path, Fault],
                                  orch: Orchestrator, tmp_path: Path) -> None:
    """The intent cannot be written: the job fails and the claim never leaves."""
    d, src, fault = faulty
    orch.add_job("o1")
    (src / "o1.dat").write_bytes(b"x")
    gate = tmp_path / "gate"
    api = Api(d)
    try:
        status, job = await api.trigger("gate_first", {"job_id": "o1", "gate": str(gate)})
        assert status == 201, job
        await api.wait_job(job["jobId"], ("running",))
        with _applied(fault):
            gate.touch()
            await d.wait_for_log('"job_finished"', timeout=60)
        final = await api.wait_job(job["jobId"])
        assert final["status"] == "failed"
        assert "report intent" in final["error"] and "not claimed" in final["error"], final
        await asyncio.sleep(1.0)  # time for a wrong report to show up, were one owed
        assert orch.claims("o1") == 0
        assert orch.report_attempts() == []
        assert final["report"] is None
    finally:
        await api.close()


@pytest.mark.slow
async def test_store_fails_while_the_claim_is_in_flight(
        faulty: tuple[DaemonProcess, Path, Fault], orch: Orchestrator) -> None:
    """The claim succeeds while the store is failing: the body cannot be fixed, the job fails,
    and once the store recovers exactly one "failed" report is delivered."""
    d, src, fault = faulty
    api = Api(d)
    try:
        job = await _claim_in_flight(api, orch, src, "o1")
        with _applied(fault):
            orch.claim_hold.set()  # the claim answer arrives while the store is failing
            await d.wait_for_log('"report_submit_failed"', timeout=60)
            await d.wait_for_log('"job_finished"', timeout=60)
        final = await wait_delivered(api, job["jobId"])
        assert final["status"] == "failed", final
        assert final["report"]["state"] == "delivered"
        assert orch.reports("o1") == [_failed("o1")]
    finally:
        await api.close()


@pytest.mark.slow
async def test_daemon_killed_while_the_claim_is_in_flight(make_daemon: MakeDaemon,
                                                          orch: Orchestrator,
                                                          tmp_path: Path) -> None:
    d, src = await _daemon(make_daemon, orch, tmp_path)
    api = Api(d)
    try:
        job = await _claim_in_flight(api, orch, src, "o1")
    finally:
        await api.close()
    d.kill9()
    orch.claim_hold.set()
    await d.start()
    api = Api(d)
    try:
        final = await wait_delivered(api, job["jobId"])
        assert final["status"] == "interrupted"
        assert orch.reports("o1") == [_failed("o1")]
    finally:
        await api.close()


async def test_timed_out_claimed_job_reports_failed(make_daemon: MakeDaemon,
                                                    orch: Orchestrator, tmp_path: Path) -> None:
    d, _ = await _daemon(make_daemon, orch, tmp_path)
    orch.add_job("o1")
    api = Api(d)
    try:
        status, job = await api.request("POST", "/v1/jobs", json={
            "scriptId": "gated", "timeoutS": 1,
            "params": {"job_id": "o1", "gate": str(tmp_path / "never")}})
        assert status == 201, job
        final = await wait_delivered(api, job["jobId"])
        assert final["status"] == "failed" and "timed out after 1 s" in final["error"], final
        assert orch.reports("o1") == [_failed("o1")]
    finally:
        await api.close()


@pytest.mark.slow
async def test_unrecorded_delivery_is_not_posted_again(make_daemon: MakeDaemon,
                                                      orch: Orchestrator,
                                                      tmp_path: Path) -> None:
    """The orchestrator accepts a report while the store is locked: writing the outcome fails
    and backs off; the report is not re-POSTed meanwhile, and is recorded once the lock goes."""
    d, src = await _daemon(make_daemon, orch, tmp_path)
    orch.add_job("o1")
    (src / "o1.dat").write_bytes(b"payload")
    orch.report_hold = asyncio.Event()
    api = Api(d)
    try:
        _, job = await api.trigger("claim_transfer_report", {"job_id": "o1"})
        await orch.wait_attempts("o1", 1)
        fault = Fault("locked", d, None)
        with _applied(fault):
            orch.report_hold.set()  # 200 arrives while the outcome cannot be written
            await d.wait_for_log('"report_record_failed"', timeout=30)
            await asyncio.sleep(3.0)  # several backoff periods
            assert len(orch.report_attempts("o1")) == 1
        final = await wait_delivered(api, job["jobId"])
        assert final["report"]["state"] == "delivered"
        assert final["report"]["attempts"] == 1
        assert len(orch.report_attempts("o1")) == 1
    finally:
        await api.close()
