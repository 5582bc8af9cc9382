"""What a worker process may ask of the daemon, and on whose behalf.

A worker is untrusted: it may resolve secrets (as an inline script may), record report intents
for its own job only, and void or submit only the reports it recorded. Arguments are checked before
they reach the secret chain or the outbox.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aftd.scripts.context import JobRecord, Services
from aftd.scripts.ipc import ProtocolError

__all__ = ["WorkerRequests"]

_MAX_ARG_CHARS = 8192


class WorkerRequests:
    """Answers the ``call`` messages of one worker running ``job``."""

    def __init__(self, job: JobRecord, services: Services) -> None:
        self._job = job
        self._services = services
        self._reports: set[int] = set()

    async def answer(self, op: str, args: Mapping[str, Any]) -> Any:
        if op == "secret":
            return await self._services.secrets.get(_str_arg(args, "name"))
        if op == "outbox.record_intent":
            return await self._record_intent(args)
        if op == "outbox.void_intent":
            return await self._outbox().void_intent(self._own_report(args))
        if op == "outbox.submit":
            return await self._outbox().submit(self._own_report(args), _obj_arg(args, "body"))
        raise ProtocolError(f"unknown call {op!r}")

    def _outbox(self) -> Any:
        if self._services.outbox is None:
            raise ProtocolError("the daemon has no report outbox")
        return self._services.outbox

    async def _record_intent(self, args: Mapping[str, Any]) -> int:
        if args.get("job_id") != self._job.id:
            raise ProtocolError("a job may record report intents for itself only")
        token = args.get("token_secret")
        if token is not None and not isinstance(token, str):
            raise ProtocolError("token_secret must be a string or null")
        outbox = self._outbox()
        report_id: int = await outbox.record_intent(
            self._job.id, url=_str_arg(args, "url"), token_secret=token,
            failure_body=_obj_arg(args, "failure_body"),
            idempotency_key=_str_arg(args, "idempotency_key"))
        # A key already taken returns that row, which may be another job's report.
        if await outbox.owner_of(report_id) != self._job.id:
            raise ProtocolError("that idempotency key belongs to another job's report")
        self._reports.add(report_id)
        return report_id

    def _own_report(self, args: Mapping[str, Any]) -> int:
        report_id = args.get("report_id")
        if not isinstance(report_id, int) or report_id not in self._reports:
            raise ProtocolError(f"report {report_id!r} was not recorded by this job")
        return report_id


def _str_arg(args: Mapping[str, Any], name: str) -> str:
    value = args.get(name)
    if not isinstance(value, str) or not value or len(value) > _MAX_ARG_CHARS:
        raise ProtocolError(f"{name} must be a non-empty string of at most "
                            f"{_MAX_ARG_CHARS} characters")
    return value


def _obj_arg(args: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = args.get(name)
    if not isinstance(value, dict):
        raise ProtocolError(f"{name} must be an object")
    return value
