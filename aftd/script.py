"""The public, typed API for aftd scripts: import from here, annotate ``main(job: Job)``.

::

    from aftd.script import Job

    async def main(job: Job) -> int:
        src, dst = job.vfs("archive"), job.vfs("partner")
        result = await src.copy_to(job.params["path"], dst, "inbound", verify="sha256")
        job.log.info("copied", files=result.files, bytes=result.bytes)
        return 0

Everything a script sees is here: the job (:class:`Job`), a VFS (:class:`Vfs`) and what its
operations return (:class:`FileInfo`, :class:`CopyResult`), the HTTP client, the errors a script
may catch, and the claim → transfer → report helpers. The README's "Scripts" section lists the
same names (a test keeps the two in step).
"""

from __future__ import annotations

from aftd.errors import AftdError, ParamError, SecretError, TransferError
from aftd.report.claim import Claim, ClaimError
from aftd.report.workflow import (
    ClaimedWork,
    ClaimFailed,
    IntentFailed,
    ReportNotRecorded,
    claim_transfer_report,
    claimed,
)
from aftd.scripts.api import Job
from aftd.scripts.context import JobExit, JobParams
from aftd.scripts.http import HttpClient, HttpError, HttpResponse
from aftd.vfs.base import (
    FileInfo,
    PathEscapeError,
    PathExistsError,
    PathNotFoundError,
    ReadStream,
    TransientError,
    UnknownVfsError,
    WriteStream,
)
from aftd.vfs.copy import OnError, Overwrite
from aftd.vfs.handle import VfsHandle as Vfs
from aftd.vfs.result import CopyResult, Failed, Skipped

__all__ = [
    "AftdError",
    "Claim",
    "ClaimError",
    "ClaimFailed",
    "ClaimedWork",
    "CopyResult",
    "Failed",
    "FileInfo",
    "HttpClient",
    "HttpError",
    "HttpResponse",
    "IntentFailed",
    "Job",
    "JobExit",
    "JobParams",
    "OnError",
    "Overwrite",
    "ParamError",
    "PathEscapeError",
    "PathExistsError",
    "PathNotFoundError",
    "ReadStream",
    "ReportNotRecorded",
    "SecretError",
    "Skipped",
    "TransferError",
    "TransientError",
    "UnknownVfsError",
    "Vfs",
    "WriteStream",
    "claim_transfer_report",
    "claimed",
]
