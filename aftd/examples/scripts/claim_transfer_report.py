"""Claim a job from the orchestrator, transfer its files, and always report the outcome.

Params: ``job_id`` (required), the orchestrator's job to claim.
Secrets: ``orch-api-url`` (base URL of the orchestrator API) and ``orch-api-token`` (bearer).

``POST {url}/jobs/{job_id}/claim`` answers ``sourceVfs``, ``sourcePath``, ``destVfs`` and
``destDir``; the file or tree is copied with the copy engine; then
``{"jobId": ..., "status": "completed" | "failed", "agent": "aftd"}`` goes to
``POST {url}/jobs/{job_id}/report`` through the daemon's durable outbox, so the report survives
failures, cancels, orchestrator outages and daemon restarts. Exits 1 when the claim or the
transfer failed. A claim that fails reports nothing: nothing was claimed.
"""

from __future__ import annotations

from aftd.script import Job, claim_transfer_report

SCRIPT_NAME = "claim-transfer-report"


async def main(job: Job) -> int:
    return await claim_transfer_report(job, job_id=job.params["job_id"])
