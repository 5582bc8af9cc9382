"""The claim → transfer → report workflow as a helper any script can use in a few lines.

::

    from aftd.report.workflow import claim_transfer_report

    async def main(job):
        return await claim_transfer_report(job, job_id=job.params["job_id"])

or, to do something else than one copy between claiming and reporting::

    async with claimed(job, job_id=job.params["job_id"]) as work:
        await work.src.copy_to(work.claim.source_path, work.dst, work.claim.dest_dir)

Once the claim request succeeds, a report intent is recorded durably in the daemon's outbox:
whatever happens afterwards (a bad claim answer, a failed copy, an exception, a cancel, the
daemon being killed), exactly one final report reaches the orchestrator, eventually. A claim that
fails (unreachable orchestrator, non-2xx answer) claimed nothing, so nothing is reported.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

from aftd.errors import AftdError, ParamError, TransferError
from aftd.report.claim import Claim, ClaimError, parse_claim
from aftd.scripts.context import JobExit
from aftd.scripts.http import HttpError

__all__ = ["AGENT", "TOKEN_SECRET", "URL_SECRET", "ClaimFailed", "ClaimedWork",
           "claim_transfer_report", "claimed", "idempotency_key", "report_body"]

AGENT = "aftd"
# Names of secrets (not values) the workflow reads by default.
URL_SECRET = "orch-api-url"  # noqa: S105
TOKEN_SECRET = "orch-api-token"  # noqa: S105
# Fixed namespace: the same (aftd job, orchestrator job) pair always yields the same key.
_KEY_NAMESPACE = uuid.UUID("5b0f0c52-8d4e-4f57-9a39-3c1f6a2d7e11")


class ClaimFailed(AftdError):
    """The claim request itself failed (unreachable, non-2xx): nothing was claimed."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


def idempotency_key(aftd_job_id: str, orch_job_id: str) -> str:
    """The report's ``Idempotency-Key``: stable across retries and daemon restarts."""
    return str(uuid.uuid5(_KEY_NAMESPACE, f"{aftd_job_id}\x00{orch_job_id}"))


def report_body(orch_job_id: str, status: Literal["completed", "failed"],
                agent: str = AGENT) -> dict[str, str]:
    return {"jobId": orch_job_id, "status": status, "agent": agent}


@dataclass
class ClaimedWork:
    """What a successful claim yields: the validated answer and its two VFS."""

    job_id: str
    claim: Claim
    src: Any
    dst: Any
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


async def _claim(job: Any, claim_url: str, token: str, orch_job_id: str) -> bytes:
    """POST the claim; the raw answer body on 2xx, :class:`ClaimFailed` otherwise."""
    async with job.http(bearer=token) as client:
        try:
            resp = await client.post(claim_url)
        except HttpError as exc:
            raise ClaimFailed(f"claim of job {orch_job_id!r} failed: {exc}") from None
    if not resp.ok:
        raise ClaimFailed(f"claim of job {orch_job_id!r} refused: HTTP {resp.status}",
                          status=resp.status)
    body: bytes = resp.body
    return body


def _vfs(job: Any, name: str, field: str) -> Any:
    try:
        return job.vfs(name)
    except (TransferError, KeyError, LookupError) as exc:
        # The name came from the orchestrator: blame the claim field, not the script.
        raise ClaimError(f"unknown VFS {name!r} ({exc})", field=field) from None


@asynccontextmanager
async def claimed(job: Any, *, job_id: str, url_secret: str = URL_SECRET,
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
    raw = await _claim(job, f"{job_url}/claim", token, orch_job_id)
    # Durable before anything else can fail: from here on a report is owed.
    report_id = outbox.record_intent(
        job.id, url=f"{job_url}/report", token_secret=token_secret,
        failure_body=report_body(orch_job_id, "failed", agent),
        idempotency_key=idempotency_key(job.id, orch_job_id))
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
        # Runs on CancelledError too; submit is synchronous so it cannot be interrupted.
        outbox.submit(report_id, report_body(orch_job_id, status, agent))
        job.log.info("report_queued", orch_job_id=orch_job_id, status=status)


async def claim_transfer_report(job: Any, *, job_id: str, url_secret: str = URL_SECRET,
                                token_secret: str = TOKEN_SECRET,
                                overwrite: str = "never",
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
        job.log.error("claim_failed", orch_job_id=job_id, status=exc.status, error=str(exc))
        return 1
    except ClaimError as exc:
        job.log.error("claim_invalid", orch_job_id=job_id, field=exc.field, error=str(exc))
        return 1
    except TransferError as exc:
        job.log.error("transfer_failed", orch_job_id=job_id, vfs=exc.vfs, path=exc.path,
                      error=str(exc))
        return 1
    return 0
