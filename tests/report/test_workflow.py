"""The claim → transfer → report helper with real parts: the lead's job context, local VFS
through the VFS pool, the secret chain, the outbox and the orchestrator server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from aftd.errors import ParamError
from aftd.report.claim import ClaimError
from aftd.report.outbox import Outbox
from aftd.report.workflow import (
    ClaimFailed,
    claim_transfer_report,
    claimed,
    idempotency_key,
)
from aftd.scripts.context import JobContext, JobExit, Services
from aftd.scripts.loader import ScriptLoader
from aftd.secrets.chain import SecretChain
from aftd.vfs.config import VfsConfig
from aftd.vfs.registry import VfsPool
from tests.fixtures.orchestrator import Orchestrator
from tests.report.conftest import MakeOutbox
from tests.report.helpers import wait_report

EXAMPLES = Path(__file__).resolve().parents[2] / "aftd" / "examples" / "scripts"
MakeJob = Callable[..., JobContext]


def _failed(o: str) -> dict[str, str]:
    return {"jobId": o, "status": "failed", "agent": "aftd"}


def _completed(o: str) -> dict[str, str]:
    return {"jobId": o, "status": "completed", "agent": "aftd"}


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    src, dst = tmp_path / "src", tmp_path / "dst"
    (dst / "in").mkdir(parents=True)
    src.mkdir()
    return src, dst


@pytest.fixture
async def box(make_outbox: MakeOutbox) -> Outbox:
    return await make_outbox()


@pytest.fixture
async def make_job(roots: tuple[Path, Path], secrets: SecretChain,
                   box: Outbox) -> AsyncIterator[MakeJob]:
    pool = VfsPool({"src": VfsConfig("src", "local", str(roots[0])),
                    "dst": VfsConfig("dst", "local", str(roots[1]))}, secrets)
    services = Services(secrets=secrets, vfs=pool, outbox=box)
    jobs: list[JobContext] = []
    counter = iter(range(10_000))

    def make(params: dict[str, Any] | None = None) -> JobContext:
        job = JobContext(f"aftd-{next(counter)}", "claim_transfer_report",
                         params if params is not None else {},
                         structlog.get_logger("aftd.job"), services)
        jobs.append(job)
        return job

    yield make
    for job in jobs:
        await job.aclose()
    await pool.aclose()


async def test_success_copies_and_reports_completed(orch: Orchestrator, make_job: MakeJob,
                                                    box: Outbox, roots: tuple[Path, Path]) -> None:
    (roots[0] / "o1.dat").write_bytes(b"payload")
    orch.add_job("o1")
    job = make_job()
    assert await claim_transfer_report(job, job_id="o1") == 0
    assert (roots[1] / "in" / "o1.dat").read_bytes() == b"payload"
    assert await orch.wait_reports("o1") == [_completed("o1")]
    rep = await wait_report(box, job.id, "delivered")
    assert rep["idempotencyKey"] == idempotency_key(job.id, "o1")
    assert orch.claims("o1") == 1


async def test_missing_source_reports_failed(orch: Orchestrator, make_job: MakeJob) -> None:
    orch.add_job("o1")
    with capture_logs() as logs:
        assert await claim_transfer_report(make_job(), job_id="o1") == 1
    assert await orch.wait_reports("o1") == [_failed("o1")]
    assert any(e["event"] == "transfer_failed" and e["vfs"] == "src" for e in logs)


@pytest.mark.parametrize("answer", [
    {"sourceVfs": "src", "sourcePath": "o1.dat", "destVfs": "dst", "destDir": "../../etc"},
    {"sourceVfs": "src", "sourcePath": "../../../etc/passwd", "destVfs": "dst", "destDir": "in"},
    {"sourceVfs": "src", "sourcePath": "o1.dat", "destVfs": "dst", "destDir": "in/../../etc"},
    {"sourceVfs": "src", "sourcePath": "o1.dat", "destVfs": "dst", "destDir": "out"},
])
async def test_malicious_claim_is_refused_and_reported(
        orch: Orchestrator, make_job: MakeJob, roots: tuple[Path, Path],
        answer: dict[str, str]) -> None:
    (roots[0] / "o1.dat").write_bytes(b"payload")
    outside = roots[1].parent / "outside"
    outside.mkdir()
    (roots[1] / "out").symlink_to(outside)  # a symlink inside the root that leads out of it
    orch.add_job("o1", answer)
    with capture_logs() as logs:
        assert await claim_transfer_report(make_job(), job_id="o1") == 1
    assert await orch.wait_reports("o1") == [_failed("o1")]
    assert [e for e in logs if e["event"] == "transfer_failed"]
    assert not (roots[1].parent / "etc").exists()
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize(("answer", "raw", "field"), [
    ({"sourceVfs": "src", "sourcePath": "x", "destVfs": "dst"}, None, "destDir"),
    ({"sourceVfs": 7, "sourcePath": "x", "destVfs": "dst", "destDir": "in"}, None, "sourceVfs"),
    ({"sourceVfs": "nope", "sourcePath": "x", "destVfs": "dst", "destDir": "in"}, None,
     "sourceVfs"),
    ({"sourceVfs": "src", "sourcePath": "x", "destVfs": "elsewhere", "destDir": "in"}, None,
     "destVfs"),
    (None, "not json at all", None),
    (None, "[1, 2, 3]", None),
])
async def test_bad_claim_answer_reports_failed(orch: Orchestrator, make_job: MakeJob,
                                               answer: Any, raw: str | None,
                                               field: str | None) -> None:
    orch.add_job("o1", answer, raw=raw)
    with capture_logs() as logs:
        assert await claim_transfer_report(make_job(), job_id="o1") == 1
    assert await orch.wait_reports("o1") == [_failed("o1")]
    (event,) = [e for e in logs if e["event"] == "claim_invalid"]
    assert event["field"] == field


@pytest.mark.parametrize("status", [404, 409, 500, 503])
async def test_refused_claim_reports_nothing(orch: Orchestrator, make_job: MakeJob, box: Outbox,
                                             status: int) -> None:
    orch.add_job("o1", status=status) if status != 404 else None
    job = make_job()
    with capture_logs() as logs:
        assert await claim_transfer_report(job, job_id="o1") == 1
    (event,) = [e for e in logs if e["event"] == "claim_failed"]
    assert event["status"] == status
    assert await box.job_report(job.id) is None
    assert await box.release_job(job.id) == 0
    assert orch.report_attempts() == []


async def test_unreachable_claim_reports_nothing(orch: Orchestrator, make_job: MakeJob,
                                                 box: Outbox) -> None:
    orch.add_job("o1")
    await orch.go_down()
    job = make_job()
    with pytest.raises(ClaimFailed, match="claim of job 'o1' failed"):
        async with claimed(job, job_id="o1"):
            raise AssertionError("the block must not run")
    assert await box.job_report(job.id) is None


async def test_exception_in_block_reports_failed_and_propagates(
        orch: Orchestrator, make_job: MakeJob) -> None:
    orch.add_job("o1")
    with pytest.raises(ZeroDivisionError):
        async with claimed(make_job(), job_id="o1"):
            _ = 1 / 0
    assert await orch.wait_reports("o1") == [_failed("o1")]


async def test_cancel_reports_failed(orch: Orchestrator, make_job: MakeJob) -> None:
    orch.add_job("o1")
    entered = asyncio.Event()

    async def script() -> None:
        async with claimed(make_job(), job_id="o1"):
            entered.set()
            await asyncio.Event().wait()  # a transfer that never ends

    task = asyncio.create_task(script())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await orch.wait_reports("o1") == [_failed("o1")]


@pytest.mark.parametrize(("code", "status"), [(0, "completed"), (3, "failed")])
async def test_job_exit_inside_block(orch: Orchestrator, make_job: MakeJob, code: int,
                                     status: str) -> None:
    orch.add_job("o1")
    job = make_job()
    with pytest.raises(JobExit):
        async with claimed(job, job_id="o1"):
            job.exit(code)
    assert await orch.wait_reports("o1") == [{"jobId": "o1", "status": status, "agent": "aftd"}]


async def test_explicit_fail_without_exception(orch: Orchestrator, make_job: MakeJob) -> None:
    orch.add_job("o1")
    async with claimed(make_job(), job_id="o1") as work:
        assert work.claim.source_vfs == "src"
        work.fail()
    assert await orch.wait_reports("o1") == [_failed("o1")]


async def test_job_id_is_path_safe(orch: Orchestrator, make_job: MakeJob) -> None:
    # "../x" must stay one path segment: the orchestrator sees job "../x", not a different URL.
    orch.add_job("../x", raw="{}")
    assert await claim_transfer_report(make_job(), job_id="../x") == 1
    assert orch.claims("../x") == 1
    assert await orch.wait_reports("../x") == [_failed("../x")]


@pytest.mark.parametrize("bad", ["", "  ", None, ["a"], "a\nb"])
async def test_bad_job_id_param(make_job: MakeJob, bad: Any) -> None:
    with pytest.raises(ParamError, match="job_id"):
        await claim_transfer_report(make_job(), job_id=bad)


def test_idempotency_key_is_deterministic() -> None:
    assert idempotency_key("a", "b") == idempotency_key("a", "b")
    assert idempotency_key("a", "b") != idempotency_key("a", "c")
    assert idempotency_key("a", "bc") != idempotency_key("ab", "c")


async def test_bundled_example_script(orch: Orchestrator, make_job: MakeJob,
                                      roots: tuple[Path, Path]) -> None:
    loader = ScriptLoader(EXAMPLES)
    info = loader.find(script_id="claim_transfer_report")
    assert info.name == "claim-transfer-report"
    assert info.description.startswith("Claim a job from the orchestrator")
    main = loader.load_main(info)
    (roots[0] / "o1.dat").write_bytes(b"x" * 100_000)
    orch.add_job("o1")
    assert await main(make_job({"job_id": "o1"})) == 0
    assert await orch.wait_reports("o1") == [_completed("o1")]
    with pytest.raises(ParamError, match="job_id"):
        await main(make_job({}))


def test_claim_error_is_exported() -> None:
    assert issubclass(ClaimError, Exception)
