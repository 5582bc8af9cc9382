"""The claim → transfer → report workflow as a helper any script can use in a few lines.

::

    from aftd.report.workflow import claim_transfer_report

    async def main(job):
        return await claim_transfer_report(job, job_id=job.params["job_id"])

or, to do something else than one copy between claiming and reporting::

    async with claimed(job, job_id=job.params["job_id"]) as work:
        await work.src.copy_to(work.claim.source_path, work.dst, work.claim.dest_dir)

A report intent is recorded durably in the daemon's outbox *before* the claim request leaves:
whatever happens afterwards (a bad claim answer, a failed copy, an exception, a cancel, the
daemon being killed, even while the claim is in flight), exactly one final report reaches the
orchestrator, eventually. If the intent cannot be recorded, nothing is claimed and the job fails.
A claim that certainly did not take effect (the connection was refused, or a non-2xx answer)
claimed nothing: the intent is voided and nothing is reported. A claim whose outcome is unknown
(a timeout or a dropped connection after the request went out) is reported ``failed``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

from aftd.errors import AftdError, ParamError, TransferError
from aftd.report.claim import Claim, ClaimError, parse_claim
from aftd.scripts.api import Job
from aftd.scripts.context import JobExit, ReportOutbox
from aftd.scripts.http import HttpError
from aftd.vfs.copy import Overwrite
from aftd.vfs.handle import VfsHandle

__all__ = ["AGENT", "TOKEN_SECRET", "URL_SECRET", "ClaimFailed", "ClaimedWork", "IntentFailed",
           "ReportNotRecorded", "claim_transfer_report", "claimed", "idempotency_key",
           "report_body"]

AGENT = "aftd"
# Names of secrets (not values) the workflow reads by default.
URL_SECRET = "orch-api-url"  # noqa: S105
TOKEN_SECRET = "orch-api-token"  # noqa: S105
# Fixed namespace: the same (aftd job, orchestrator job) pair always yields the same key.
_KEY_NAMESPACE = uuid.UUID("5b0f0c52-8d4e-4f57-9a39-3c1f6a2d7e11")


class ClaimFailed(AftdError):
    """The claim request failed. ``certain`` when it surely did not take effect (refused
    connection, non-2xx answer): nothing was claimed. Otherwise its outcome is unknown and a
    ``failed`` report is owed."""

    def __init__(self, message: str, *, status: int | None = None,
                 certain: bool = True) -> None:
        self.status = status
        self.certain = certain
        super().__init__(message)


class IntentFailed(AftdError):
    """The report intent could not be recorded, so the claim was not sent."""


class ReportNotRecorded(AftdError):
    """The final report's body could not be recorded; the intent is reported "failed"."""


def idempotency_key(aftd_job_id: str, orch_job_id: str) -> str:
    """The report's ``Idempotency-Key``: stable across retries and daemon restarts."""
    return str(uuid.uuid5(_KEY_NAMESPACE, f"{aftd_job_id}\x00{orch_job_id}"))


def report_body(orch_job_id: str, status: Literal["completed", "failed"],
                agent: str = AGENT) -> dict[str, str]:
    return {"jobId": orch_job_id, "status": status, "agent": agent}


@dataclass
class ClaimedWork:
    """What a successful claim yields: the orchestrator's ``job_id``, the validated ``claim``
    (``source_vfs``, ``source_path``, ``dest_vfs``, ``dest_dir``), its two VFS as ``src`` and
    ``dst``, and the ``report_id`` of the report that is owed."""

    job_id: str
    claim: Claim
    src: VfsHandle
    dst: VfsHandle
    report_id: int
    failed: bool = False

    def fail(self) -> None:
        """Report ``failed`` at the end even though no exception is raised."""
        self.failed = True


def _check_job_id(job_id: object) -> str:
    if isinstance(job_id, int) and not isinstance(job_id, bool):
        job_id = str(job_id)
    if not isinstance(job_id, str) or not job_id.strip():
        raise ParamError("parameter 'job_id' must be a non-empty string")
    if any(ord(c) < 0x20 for c in job_id) or len(job_id) > 1024:
        raise ParamError("parameter 'job_id' must be at most 1024 printable characters")
    return job_id


async def _claim(job: Job, claim_url: str, token: str, orch_job_id: str) -> bytes:
    """POST the claim; the raw answer body on 2xx, :class:`ClaimFailed` otherwise."""
    async with job.http(bearer=token) as client:
        try:
            resp = await client.post(claim_url)
        except HttpError as exc:
            raise ClaimFailed(f"claim of job {orch_job_id!r} failed: {exc}",
                              certain=exc.not_sent) from None
    if not resp.ok:
        raise ClaimFailed(f"claim of job {orch_job_id!r} refused: HTTP {resp.status}",
                          status=resp.status)
    body: bytes = resp.body
    return body


def _vfs(job: Job, name: str, field: str) -> VfsHandle:
    try:
        return job.vfs(name)
    except (TransferError, KeyError, LookupError) as exc:
        # The name came from the orchestrator: blame the claim field, not the script.
        raise ClaimError(f"unknown VFS {name!r} ({exc})", field=field) from None


@asynccontextmanager
async def claimed(job: Job, *, job_id: str, url_secret: str = URL_SECRET,
                  token_secret: str = TOKEN_SECRET,
                  agent: str = AGENT) -> AsyncIterator[ClaimedWork]:
    """Claim ``job_id``; report ``completed`` if the block ends normally, ``failed`` otherwise.

    Raises :class:`ClaimFailed` (nothing reported) when the claim request fails, and
    :class:`ClaimError` (``failed`` reported) when its answer is unusable.
    """
    outbox = job.outbox
    if outbox is None:
        raise AftdError("the daemon has no report outbox; cannot guarantee a report")
    orch_job_id = _check_job_id(job_id)
    base = (await job.secret(url_secret)).strip().rstrip("/")
    token = await job.secret(token_secret)
    job_url = f"{base}/jobs/{quote(orch_job_id, safe='')}"
    # Durable before the claim leaves: if the daemon dies or the store fails while the claim
    # is in flight, the intent is released as a "failed" report.
    report_id = await _record_intent(job, outbox, job_url, token_secret, orch_job_id, agent)
    try:
        raw = await _claim(job, f"{job_url}/claim", token, orch_job_id)
    except ClaimFailed as exc:
        if exc.certain:
            await _void(job, outbox, report_id)
        raise
    job.log.info("job_claimed", orch_job_id=orch_job_id)
    status: Literal["completed", "failed"] = "failed"
    try:
        claim = parse_claim(raw)
        work = ClaimedWork(orch_job_id, claim, _vfs(job, claim.source_vfs, "sourceVfs"),
                           _vfs(job, claim.dest_vfs, "destVfs"), report_id)
        try:
            yield work
        except JobExit as exc:  # job.exit(0) inside the block is a success
            if exc.code == 0 and not work.failed:
                status = "completed"
            raise
        if not work.failed:
            status = "completed"
    finally:
        # Runs on CancelledError too; shielded so a cancel cannot interrupt the write.
        await asyncio.shield(_submit(job, outbox, report_id,
                                     report_body(orch_job_id, status, agent)))
        job.log.info("report_queued", orch_job_id=orch_job_id, status=status)


async def _record_intent(job: Job, outbox: ReportOutbox, job_url: str, token_secret: str,
                         orch_job_id: str, agent: str) -> int:
    try:
        report_id: int = await outbox.record_intent(
            job.id, url=f"{job_url}/report", token_secret=token_secret,
            failure_body=report_body(orch_job_id, "failed", agent),
            idempotency_key=idempotency_key(job.id, orch_job_id))
    except (sqlite3.Error, OSError) as exc:
        raise IntentFailed(f"cannot record the report intent for job {orch_job_id!r}, so it "
                           f"was not claimed: {exc}") from None
    return report_id


_STORE_TRIES = 3


async def _void(job: Job, outbox: ReportOutbox, report_id: int) -> None:
    """Forget the intent of a claim that surely did not take effect (a few tries; if the store
    stays unusable, the intent is released as a "failed" report when the job ends)."""
    for attempt in range(_STORE_TRIES):
        try:
            await outbox.void_intent(report_id)
            return
        except (sqlite3.Error, OSError) as exc:
            job.log.warning("report_intent_void_failed", report_id=report_id, error=str(exc))
            if attempt + 1 < _STORE_TRIES:
                await asyncio.sleep(0.5 * (attempt + 1))


async def _submit(job: Job, outbox: ReportOutbox, report_id: int, body: dict[str, str]) -> None:
    """Fix the report's body. If the store keeps failing, the intent stays and is released
    as a "failed" report when the job ends (or at the next start), and the job fails so that
    its own state agrees with that report."""
    for attempt in range(_STORE_TRIES):
        try:
            await outbox.submit(report_id, body)
            return
        except (sqlite3.Error, OSError) as exc:
            job.log.warning("report_submit_failed", report_id=report_id, error=str(exc))
            if attempt + 1 == _STORE_TRIES:
                raise ReportNotRecorded(f"cannot record the final report ({exc}); "
                                        "\"failed\" will be reported") from None
            await asyncio.sleep(0.5 * (attempt + 1))


async def claim_transfer_report(job: Job, *, job_id: str, url_secret: str = URL_SECRET,
                                token_secret: str = TOKEN_SECRET,
                                overwrite: Overwrite = "never",
                                verify: Literal["sha256"] | None = None) -> int:
    """Claim, copy ``sourcePath`` into ``destDir``, report; the exit code (0 ok, 1 failed)."""
    try:
        async with claimed(job, job_id=job_id, url_secret=url_secret,
                           token_secret=token_secret) as work:
            c = work.claim
            await work.src.copy_to(c.source_path, work.dst, c.dest_dir,
                                   overwrite=overwrite, verify=verify)
            job.log.info("transfer_completed", orch_job_id=work.job_id, source_vfs=c.source_vfs,
                         source_path=c.source_path, dest_vfs=c.dest_vfs, dest_dir=c.dest_dir)
    except ClaimFailed as exc:
        job.log.error("claim_failed", orch_job_id=job_id, status=exc.status, error=str(exc),
                      outcome="refused" if exc.certain else "unknown")
        return 1
    except ClaimError as exc:
        job.log.error("claim_invalid", orch_job_id=job_id, field=exc.field, error=str(exc))
        return 1
    except TransferError as exc:
        job.log.error("transfer_failed", orch_job_id=job_id, vfs=exc.vfs, path=exc.path,
                      error=str(exc))
        return 1
    return 0
