"""Turning events into queued notifications, one per ``[[notify]]`` entry that wants each.

Every event is written to the notification store before anything is sent, with an
Idempotency-Key derived from (entry, event, subject): a job's id, a report's id and attempt, or
the key a caller of :func:`aftd.notify.emit` gives. Queueing the same one again is a no-op, so
the recovery paths below may repeat themselves safely.

A job's end must be announced even if the daemon dies right after storing its final state:
when a job that some entry wants to hear about starts, an *intent* is stored; the end event
and the intent's removal are one transaction; at start-up, intents left over are settled from
the job store (:meth:`Notifications.reconcile`). Jobs the last process left running are
announced ``job.interrupted`` by the runner's start-up like any other end.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import structlog

from aftd.jobs.model import Job
from aftd.notify.render import body, job_link, job_payload
from aftd.notify.store import NewNotification, NotifyStore
from aftd.notifyconfig import EVENTS, JOB_EVENTS, NotifyConfig

__all__ = ["Notifications", "idempotency_key"]

log = structlog.get_logger("aftd.notify")

# Fixed namespace: the same (entry, event, subject) always yields the same key.
_KEY_NAMESPACE = uuid.UUID("9d3c2f8e-61a4-4c0b-8f7e-2b5a1d6c9e40")
JobLookup = Callable[[str], Awaitable[Job | None]]


def idempotency_key(notify: str, event: str, subject: str) -> str:
    name = "\0".join((notify, event, subject))
    return f"aftd-notify-{uuid.uuid5(_KEY_NAMESPACE, name)}"


class Notifications:
    """The daemon's notifications: rules from ``[[notify]]``, rows in ``store``; ``wake`` tells
    the outbox that something is due."""

    def __init__(self, store: NotifyStore, rules: Sequence[NotifyConfig], base_url: str, *,
                 wake: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self._rules = tuple(rules)
        self._base_url = base_url
        self._wake = wake
        self._clock = clock
        # Jobs with a stored intent: a job without one, that no entry wants, ends without a
        # write (end hooks run while the job's final state is being settled).
        self._intents: set[str] = set()

    async def load(self) -> None:
        """Read the intents a previous process left (before any job runs)."""
        self._intents.update(await self.store.intents())

    def configure(self, rules: Sequence[NotifyConfig]) -> None:
        """A reload's entries apply to events from now on; queued ones keep theirs."""
        self._rules = tuple(rules)

    def _matching(self, event: str, script_id: str | None) -> list[NotifyConfig]:
        return [r for r in self._rules if r.wants(event, script_id)]

    # -- jobs ------------------------------------------------------------------------------

    async def job_started(self, job: Job) -> None:
        """Store an intent when some entry wants to hear how this job ends."""
        if any(r.wants(e, job.script_id) for r in self._rules for e in JOB_EVENTS):
            await self.store.add_intent(job.id, self._clock())
            self._intents.add(job.id)

    async def job_ended(self, job: Job) -> None:
        """Queue ``job.<status>`` for each entry that wants it, and drop the job's intent."""
        event = f"job.{job.status}"
        details = job_payload(job, self._base_url)
        rows = [self._row(r, event, job.id, job.id, details)
                for r in self._matching(event, job.script_id)] if event in JOB_EVENTS else []
        if rows or job.id in self._intents:
            await self._enqueue(rows, settle_job=job.id)
            self._intents.discard(job.id)

    async def reconcile(self, lookup: JobLookup) -> int:
        """At start-up: announce the end of jobs whose intent outlived them (a crash between
        the job's final state and its notifications); keep those of jobs still queued."""
        settled = 0
        for job_id in await self.store.intents():
            job = await lookup(job_id)
            if job is None:  # pruned: nothing left to tell
                await self._enqueue([], settle_job=job_id)
                self._intents.discard(job_id)
            elif job.terminal:
                await self.job_ended(job)
                settled += 1
        if settled:
            log.warning("notify_intents_settled_at_startup", count=settled)
        return settled

    # -- reports and other events ----------------------------------------------------------

    async def report_abandoned(self, job: Job | None, job_id: str,
                               report: Mapping[str, Any]) -> None:
        # The job's own figures too (status, duration, bytes, ...), its error as jobError:
        # ``error`` says why the report was given up.
        details: dict[str, Any] = {"jobId": job_id, "scriptId": None}
        if job is not None:
            details.update(job_payload(job, self._base_url))
            details["jobError"] = details.pop("error")
        details.update({"reportId": report["reportId"], "attempts": report["attempts"],
                        "lastStatus": report["lastStatus"], "error": report["lastError"],
                        "url": job_link(self._base_url, job_id)})
        subject = f"{report['reportId']}.{report['attempts']}"
        await self._enqueue([self._row(r, "report.abandoned", job_id, subject, details)
                             for r in self._matching("report.abandoned", details["scriptId"])])

    async def emit(self, event: str, payload: Mapping[str, Any], *,
                   key: str | None = None) -> int:
        """Queue ``event`` (see :func:`aftd.notify.emit`)."""
        if event not in EVENTS:
            raise ValueError(f"unknown notification event {event!r}")
        details = dict(payload)
        job_id = details.get("jobId")
        if isinstance(job_id, str) and "url" not in details:
            details["url"] = job_link(self._base_url, job_id)
        script = details.get("scriptId")
        subject = key if key is not None else uuid.uuid4().hex
        return await self._enqueue([
            self._row(r, event, job_id if isinstance(job_id, str) else None, subject, details)
            for r in self._matching(event, script if isinstance(script, str) else None)])

    # -- queueing --------------------------------------------------------------------------

    def _row(self, rule: NotifyConfig, event: str, job_id: str | None, subject: str,
             details: Mapping[str, Any]) -> NewNotification:
        return NewNotification(
            notify=rule.name, event=event, job_id=job_id, url=rule.url,
            url_secret=rule.url_secret or None, hmac_secret=rule.hmac_secret or None,
            idempotency_key=idempotency_key(rule.name, event, subject),
            body=body(rule.format, event, rule.name, self._clock(), details))

    async def _enqueue(self, rows: list[NewNotification], *,
                       settle_job: str | None = None) -> int:
        added = await self.store.enqueue(rows, self._clock(), settle_job=settle_job)
        if added:
            # A row queued before (a repeated recovery) is not counted again.
            log.info("notifications_queued", count=added, notify_event=rows[0].event,
                     notify=sorted({r.notify for r in rows}), job_id=rows[0].job_id)
            self._wake()
        return added
