"""The job API a script's ``main(job)`` receives, as a typed protocol.

:class:`Job` describes what a script may use; the daemon's job context
(:class:`aftd.scripts.context.JobContext`) implements it, in the daemon and in a worker process
alike. Scripts import it from :mod:`aftd.script`.
"""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn, Protocol

import structlog

from aftd.scripts.context import JobParams, ReportOutbox
from aftd.scripts.http import HttpClient
from aftd.vfs.handle import VfsHandle

__all__ = ["Job"]


class Job(Protocol):
    """One run of a script: its id and params, its log, and the daemon's services."""

    @property
    def id(self) -> str:
        """The job's id (a UUID), as in ``GET /v1/jobs/{jobId}``."""
        ...

    @property
    def script_id(self) -> str:
        """The id of the script being run (its file stem)."""
        ...

    @property
    def params(self) -> JobParams:
        """The trigger's parameters, read-only. ``job.params["x"]`` raises
        :class:`~aftd.errors.ParamError` naming a missing one; ``job.params.require("x", int)``
        also checks its type (and that a string is not empty)."""
        ...

    @property
    def log(self) -> structlog.typing.FilteringBoundLogger:
        """The job's logger (``job.log.info("event", key=value)``): its lines are stored with
        the job, served by ``GET /v1/jobs/{id}/log``, and scrubbed of secret values."""
        ...

    async def secret(self, name: str) -> str:
        """The secret ``name`` (``name#field`` for a field), resolved through the provider
        chain and cached briefly; raises :class:`~aftd.errors.SecretError` naming it."""
        ...

    def http(self, base_url: str | None = None, *, bearer: str | None = None,
             headers: dict[str, str] | None = None, timeout_s: float | None = None,
             verify: bool = True, ca_file: Path | str | None = None) -> HttpClient:
        """An HTTP client for ``base_url`` with an optional bearer token and default headers;
        TLS is verified (against ``ca_file`` when given). Closed when the job ends."""
        ...

    def vfs(self, name: str) -> VfsHandle:
        """The configured VFS ``[vfs.NAME]``; raises
        :class:`~aftd.vfs.base.UnknownVfsError` for a name that is not configured."""
        ...

    def exit(self, code: int) -> NoReturn:
        """End the job now with exit code ``code`` (0 succeeded, anything else failed)."""
        ...

    @property
    def outbox(self) -> ReportOutbox | None:
        """The daemon's durable report outbox, used by the claim helpers (None where the
        daemon has none)."""
        ...
