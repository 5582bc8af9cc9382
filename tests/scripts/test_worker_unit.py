"""The daemon's side of the worker protocol, in-process: framing, what a worker may ask for,
and how its outcome becomes a job state."""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from aftd.config import ReportsConfig
from aftd.errors import SecretError
from aftd.jobs.model import Job, JobState
from aftd.report.outbox import Outbox
from aftd.scripts.context import Services
from aftd.scripts.execute import Outcome
from aftd.scripts.ipc import (
    MAX_FRAME,
    ProtocolError,
    RemoteError,
    decode,
    encode,
    error_from_wire,
    error_to_wire,
    read_frame,
)
from aftd.scripts.outcome import check_outcome, describe_exit, verdict
from aftd.scripts.worker_requests import WorkerRequests
from aftd.secrets.chain import SecretChain
from aftd.secrets.config import SecretsConfig
from aftd.secrets.env import EnvProvider
from aftd.vfs.registry import VfsPool

# -- framing ---------------------------------------------------------------------------------


async def _frames(data: bytes) -> list[dict[str, Any] | None]:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    out: list[dict[str, Any] | None] = []
    while True:
        msg = await read_frame(reader)
        out.append(msg)
        if msg is None:
            return out


async def test_frames_round_trip_and_end_cleanly() -> None:
    msgs = [{"t": "log", "event": "héllo", "fields": {"n": 1}}, {"t": "done", "outcome": "x"}]
    assert await _frames(b"".join(encode(m) for m in msgs)) == [*msgs, None]


@pytest.mark.parametrize(("data", "reason"), [
    (struct.pack(">I", MAX_FRAME + 1), "exceeds"),
    (struct.pack(">I", 5) + b"hello", "not valid JSON"),
    (struct.pack(">I", 3) + b"NaN", "not valid JSON"),
    (struct.pack(">I", 2) + b"[]", "JSON object with a type"),
    (struct.pack(">I", 10) + b"{}", "inside a frame"),
    (b"\x00\x00", "inside a frame header"),
])
async def test_bad_frames_are_named(data: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        await _frames(data)


def test_encode_refuses_what_json_cannot_carry() -> None:
    with pytest.raises(ValueError, match="JSON compliant"):
        encode({"t": "x", "v": float("nan")})
    with pytest.raises(ProtocolError, match="exceeds"):
        encode({"t": "x", "v": "a" * MAX_FRAME})
    assert decode(encode({"t": "x"})[4:]) == {"t": "x"}


def test_errors_cross_the_wire_scrubbed_and_typed() -> None:
    from aftd.redact import register

    register("wire-secret-123456")
    wire = error_to_wire(SecretError("secret 'x' is wire-secret-123456"))
    assert wire == {"type": "SecretError", "message": "secret 'x' is ***"}
    assert isinstance(error_from_wire(wire), SecretError)
    assert error_to_wire(KeyError("k")) == {"type": "AftdError", "message": "KeyError: 'k'"}
    assert isinstance(error_from_wire({"type": "os.system", "message": "m"}), RemoteError)
    assert isinstance(error_from_wire("garbage"), RemoteError)


# -- requests ----------------------------------------------------------------------------------


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    chain = SecretChain(SecretsConfig(order=("env",), cache_ttl_s=0.0),
                        providers=[EnvProvider({"AFTD_SECRET_TOKEN": "tok-0123456789"})])
    box = Outbox(tmp_path / "aftd.sqlite", ReportsConfig(initial_backoff_s=30), chain)
    await box.start()
    yield box
    await box.aclose(flush_timeout_s=0)
    await chain.aclose()


def _requests(outbox: Outbox | None, job_id: str = "job-a") -> WorkerRequests:
    chain = SecretChain(SecretsConfig(order=("env",), cache_ttl_s=0.0),
                        providers=[EnvProvider({"AFTD_SECRET_DEMO": "demo-value-42"})])
    job = Job(id=job_id, script_id="s", params={}, status=JobState.RUNNING,
              created_at=time.time())
    return WorkerRequests(job, Services(secrets=chain, vfs=VfsPool({}, chain), outbox=outbox))


_INTENT = {"url": "http://127.0.0.1:9/jobs/1/report", "token_secret": "token",
           "failure_body": {"status": "failed"}, "idempotency_key": "key-1"}


async def test_a_worker_records_and_submits_its_own_reports(outbox: Outbox) -> None:
    req = _requests(outbox)
    assert await req.answer("secret", {"name": "demo"}) == "demo-value-42"
    report_id = await req.answer("outbox.record_intent", {"job_id": "job-a", **_INTENT})
    assert (await outbox.job_report("job-a"))["state"] == "intent"  # type: ignore[index]
    await req.answer("outbox.submit", {"report_id": report_id, "body": {"status": "completed"}})
    assert (await outbox.job_report("job-a"))["state"] == "pending"  # type: ignore[index]


async def test_a_worker_voids_only_its_own_intents(outbox: Outbox) -> None:
    other = _requests(outbox, "job-b")
    theirs = await other.answer("outbox.record_intent", {"job_id": "job-b", **_INTENT})
    mine = _requests(outbox)
    with pytest.raises(ProtocolError, match="not recorded by this job"):
        await mine.answer("outbox.void_intent", {"report_id": theirs})
    own = await mine.answer("outbox.record_intent",
                            {"job_id": "job-a", **_INTENT, "idempotency_key": "key-a"})
    assert await mine.answer("outbox.void_intent", {"report_id": own}) is True
    assert await outbox.job_report("job-a") is None
    assert (await outbox.job_report("job-b"))["state"] == "intent"  # type: ignore[index]


async def test_another_jobs_idempotency_key_does_not_hand_over_its_report(
        outbox: Outbox) -> None:
    theirs = await _requests(outbox, "job-b").answer("outbox.record_intent",
                                                     {"job_id": "job-b", **_INTENT})
    mine = _requests(outbox)
    with pytest.raises(ProtocolError, match="belongs to another job"):
        await mine.answer("outbox.record_intent", {"job_id": "job-a", **_INTENT})
    with pytest.raises(ProtocolError, match="not recorded by this job"):
        await mine.answer("outbox.submit", {"report_id": theirs, "body": {}})
    assert (await outbox.job_report("job-b"))["state"] == "intent"  # type: ignore[index]


async def test_a_worker_cannot_touch_other_jobs_reports(outbox: Outbox) -> None:
    other = _requests(outbox, "job-b")
    theirs = await other.answer("outbox.record_intent", {"job_id": "job-b", **_INTENT})
    mine = _requests(outbox)
    with pytest.raises(ProtocolError, match="for itself only"):
        await mine.answer("outbox.record_intent", {"job_id": "job-b", **_INTENT})
    with pytest.raises(ProtocolError, match="not recorded by this job"):
        await mine.answer("outbox.submit", {"report_id": theirs, "body": {}})
    assert await outbox.job_report("job-a") is None
    assert (await outbox.job_report("job-b"))["state"] == "intent"  # type: ignore[index]


@pytest.mark.parametrize(("op", "args", "reason"), [
    ("secret", {"name": ""}, "name must be a non-empty string"),
    ("secret", {"name": ["x"]}, "name must be a non-empty string"),
    ("outbox.record_intent", {"job_id": "job-a", **_INTENT, "failure_body": []}, "an object"),
    ("outbox.record_intent", {"job_id": "job-a", **_INTENT, "token_secret": 5}, "string or null"),
    ("outbox.submit", {"report_id": "1", "body": {}}, "not recorded"),
    ("shell", {}, "unknown call 'shell'"),
])
async def test_bad_requests_are_refused_by_name(outbox: Outbox, op: str, args: dict[str, Any],
                                                reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        await _requests(outbox).answer(op, args)


async def test_no_outbox_is_said_plainly() -> None:
    with pytest.raises(ProtocolError, match="no report outbox"):
        await _requests(None).answer("outbox.record_intent", {"job_id": "job-a", **_INTENT})


# -- outcomes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("msg", "expected"), [
    ({"outcome": "finished", "status": "succeeded", "exit_code": 0, "error": None},
     Outcome("succeeded", 0, None)),
    ({"outcome": "finished", "status": "failed", "exit_code": 3,
      "error": "script exited with code 3"}, Outcome("failed", 3, "script exited with code 3")),
    ({"outcome": "finished", "status": "failed", "exit_code": None, "error": "ValueError: x"},
     Outcome("failed", None, "ValueError: x")),
])
def test_a_finished_worker_reports_the_inline_outcome(msg: dict[str, Any],
                                                      expected: Outcome) -> None:
    check_outcome(msg)
    assert verdict(msg, 0, None) == expected


def test_cancelled_and_broken_and_silent_workers() -> None:
    with pytest.raises(asyncio.CancelledError):
        verdict({"outcome": "cancelled"}, 0, None)
    done = {"outcome": "finished", "status": "succeeded", "exit_code": 0, "error": None}
    broken = verdict(done, 0, "frame is not valid JSON")
    assert broken.status == "failed"
    assert broken.error == "the script's worker process broke the protocol: frame is not valid JSON"
    assert verdict(None, -11, None).error == ("the script's worker process was killed by signal "
                                              "SIGSEGV (Segmentation fault)")
    assert "exited with code 7 before" in describe_exit(7)
    assert "killed by signal 99" in describe_exit(-99)


@pytest.mark.parametrize("msg", [
    {"outcome": "won"}, {"outcome": "finished", "status": "great"},
    {"outcome": "finished", "status": "failed", "exit_code": 1 << 40},
    {"outcome": "finished", "status": "failed", "exit_code": True},
    {"outcome": "finished", "status": "failed", "error": ["x"]},
])
def test_impossible_outcomes_are_protocol_errors(msg: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError):
        check_outcome(msg)


def test_store_errors_stay_store_errors_in_the_worker() -> None:
    import sqlite3

    wire = error_to_wire(sqlite3.OperationalError("database is locked"))
    assert wire == {"type": "StoreError", "message": "database is locked"}
    assert isinstance(error_from_wire(wire), sqlite3.Error)
    assert isinstance(error_from_wire(error_to_wire(OSError(28, "No space left"))), OSError)
