"""The job context: the one object a script's ``main(job)`` receives.

Its typed, documented description is :class:`aftd.scripts.api.Job` (exported for scripts by
:mod:`aftd.script`); a worker process builds the same class over its channel to the daemon.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, Protocol

import structlog

from aftd.errors import ParamError
from aftd.scripts.http import HttpClient
from aftd.secrets.base import SecretResolver
from aftd.vfs.base import Vfs
from aftd.vfs.handle import VfsHandle

__all__ = ["JobContext", "JobExit", "JobParams", "JobRecord", "ReportOutbox", "Services",
           "VfsSource"]


class VfsSource(Protocol):
    """The configured VFS backends by name (:class:`aftd.vfs.registry.VfsPool`)."""

    def get(self, name: str) -> Vfs:
        """The backend ``name``; raises :class:`~aftd.vfs.base.UnknownVfsError` if unknown."""
        ...


class ReportOutbox(Protocol):
    """The durable report outbox, as the claim helpers use it (:class:`aftd.report.outbox.
    Outbox` in the daemon, a channel to it in a worker process)."""

    async def record_intent(self, job_id: str, *, url: str, token_secret: str | None,
                            failure_body: Mapping[str, Any], idempotency_key: str) -> int:
        """Record, before a claim, that a report is owed (``failure_body`` unless submitted)."""
        ...

    async def void_intent(self, report_id: int) -> bool:
        """Forget an intent whose claim surely did not take effect."""
        ...

    async def submit(self, report_id: int, body: Mapping[str, Any]) -> None:
        """Fix the report's final body and queue it for delivery."""
        ...


class JobRecord(Protocol):
    """What the script layer reads of a stored job (``aftd.jobs.model.Job`` is one)."""

    @property
    def id(self) -> str: ...

    @property
    def script_id(self) -> str: ...

    @property
    def params(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True)
class Services:
    """Daemon-wide resources a job may use; a reload swaps the whole object for new jobs."""

    secrets: SecretResolver
    vfs: VfsSource
    outbox: ReportOutbox | None = None
    http_ca_file: Path | None = None
    http_timeout_s: float = 30.0


class JobExit(BaseException):
    """Raised by ``job.exit(code)``; a BaseException so ``except Exception`` cannot swallow it.

    ``code`` is the job's exit code (0 succeeded, anything else failed)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class JobParams(Mapping[str, Any]):
    """Read-only parameters; a missing one raises an error that names it."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = dict(values)

    def __getitem__(self, name: str) -> Any:
        """The parameter ``name``; raises :class:`~aftd.errors.ParamError` naming it."""
        try:
            return self._values[name]
        except KeyError:
            raise ParamError(f"missing required parameter {name!r}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def require(self, name: str, kind: type = str) -> Any:
        """The parameter, checked to be present, non-empty and of ``kind``."""
        value = self[name]
        if not isinstance(value, kind) or (isinstance(value, str) and not value):
            raise ParamError(f"parameter {name!r} must be a non-empty {kind.__name__}")
        return value

    def __repr__(self) -> str:
        return f"JobParams({sorted(self._values)})"


class JobContext:
    """What ``main(job)`` receives; see :class:`aftd.scripts.api.Job` for each member."""

    def __init__(self, job_id: str, script_id: str, params: Mapping[str, Any],
                 log: structlog.typing.FilteringBoundLogger, services: Services) -> None:
        self.id = job_id
        self.script_id = script_id
        self.params = JobParams(params)
        self.log = log
        self._services = services
        self._clients: list[HttpClient] = []

    def __repr__(self) -> str:
        return f"<JobContext {self.id} script={self.script_id}>"

    async def secret(self, name: str) -> str:
        """Resolve a secret by name through the provider chain (cached briefly)."""
        return await self._services.secrets.get(name)

    def vfs(self, name: str) -> VfsHandle:
        """The configured VFS called ``name``."""
        return VfsHandle(self._services.vfs.get(name))

    @property
    def outbox(self) -> ReportOutbox | None:
        """The daemon's durable report outbox (None where there is none)."""
        return self._services.outbox

    def http(self, base_url: str | None = None, *, bearer: str | None = None,
             headers: dict[str, str] | None = None, timeout_s: float | None = None,
             verify: bool = True, ca_file: Path | str | None = None) -> HttpClient:
        """An HTTP client; closed automatically when the job ends."""
        client = HttpClient(base_url, bearer=bearer, headers=headers,
                            timeout_s=timeout_s or self._services.http_timeout_s,
                            verify=verify, ca_file=ca_file or self._services.http_ca_file)
        self._clients.append(client)
        return client

    def exit(self, code: int) -> NoReturn:
        """End the job now with ``code`` (0 succeeded, anything else failed)."""
        raise JobExit(int(code))

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()
        self._clients.clear()
