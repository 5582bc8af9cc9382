"""Durable reports for SyncJS scripts, through the daemon's outbox.

A script's own ``HttpCli().Post()`` is one POST, as in AFT!: if the orchestrator is down at that
moment, the report is lost. ``ReportDurably(url, tokenSecretName, body)`` hands the report to the
outbox instead (stored before it is sent, retried with backoff, one ``Idempotency-Key`` across
retries). ``ReportIntent(url, tokenSecretName, failureBody)`` records, before a claim, that a
report is owed: unless ``.Submit(body)`` fixes another body (or ``.Void()`` cancels it because
the claim did not take effect), ``failureBody`` is delivered however the job ends (an
exception, a cancel, a timeout, the daemon killed). The token is passed by secret *name* and
resolved at each delivery attempt, never stored.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Mapping
from typing import Any

from aftd.scripts.context import JobContext, ReportOutbox
from aftd.scripts.syncjs.hostargs import HostCallError, obj, opt_str, text

__all__ = ["ReportOps"]

# Fixed: the n-th report of a job to a URL always gets the same key, across daemon restarts.
_KEY_NAMESPACE = uuid.UUID("0b6f3f0e-5c1a-4f7e-8d2b-6a0e9c4d1f73")


class ReportOps:
    def __init__(self, ctx: JobContext) -> None:
        self._ctx = ctx
        self._seq = itertools.count(1)
        self._mine: set[int] = set()

    def _outbox(self) -> ReportOutbox:
        if self._ctx.outbox is None:
            raise HostCallError("the daemon has no report outbox; cannot report durably")
        return self._ctx.outbox

    async def intent(self, args: Mapping[str, Any]) -> int:
        url = _url(text(args, "url", "ReportIntent: url"))
        key = str(uuid.uuid5(_KEY_NAMESPACE, f"{self._ctx.id}\x00{url}\x00{next(self._seq)}"))
        report_id = await self._outbox().record_intent(
            self._ctx.id, url=url, token_secret=opt_str(args, "tokenSecret", "token secret"),
            failure_body=obj(args, "failureBody", "ReportIntent: failure body"),
            idempotency_key=key)
        self._mine.add(report_id)
        self._ctx.log.info("report_intent_recorded", url=url, report_id=report_id)
        return report_id

    async def submit(self, args: Mapping[str, Any]) -> None:
        report_id = self._own(args.get("id"))
        body = obj(args, "body", "Submit: body")
        await self._outbox().submit(report_id, body)
        self._ctx.log.info("report_queued", report_id=report_id, status=body.get("status"))

    async def void(self, args: Mapping[str, Any]) -> bool:
        voided = await self._outbox().void_intent(self._own(args.get("id")))
        return bool(voided)

    async def now(self, args: Mapping[str, Any]) -> None:
        """``ReportDurably``: an intent whose body is fixed at once."""
        body = obj(args, "body", "ReportDurably: body")
        report_id = await self.intent({**args, "failureBody": body})
        await self.submit({"id": report_id, "body": body})

    def _own(self, report_id: Any) -> int:
        if not isinstance(report_id, int) or report_id not in self._mine:
            raise HostCallError("not a report intent of this job")
        return report_id


def _url(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise HostCallError(f"the report URL must be an absolute http:// or https:// URL, "
                            f"got {url[:100]!r}")
    return url
