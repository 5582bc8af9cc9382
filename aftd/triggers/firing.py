"""From a claimed fire to a job: through the runner, exactly as ``POST /v1/jobs`` submits.

A fire is submitted with its idempotency key (:attr:`~aftd.triggers.store.Fire.idempotency_key`),
so submitting it again — after a crash between the submit and the record of its job, or by
the retry loop while the first submit is still under way — finds the job created the first
time. When the runner cannot take a job now (the daemon is draining, the queue is full, the
job store is failing) the fire stays claimed and is submitted later, at the latest after the
next start: a file that arrives while the daemon stops is not lost.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import structlog

from aftd.triggers.ports import JobPort, SubmitLater, SubmitRefused
from aftd.triggers.store import Fire, TriggerStore

__all__ = ["Firing", "SubmitLater"]

log = structlog.get_logger("aftd.triggers")


class Firing:
    def __init__(self, store: TriggerStore, runner: JobPort) -> None:
        self.store = store
        self.runner = runner
        # Fires being submitted now: the retry loop leaves them to the submit under way.
        self._in_flight: set[tuple[str, str]] = set()

    async def submit(self, fire: Fire) -> Fire:
        """Submit one claimed fire; the stored row records its job, or why it has none."""
        submitted, later = await self.submit_many([fire])
        if later is not None:
            raise later
        if not submitted:
            raise SubmitLater("this fire is being submitted already")
        return submitted[0]

    async def submit_many(self, fires: Sequence[Fire]) -> tuple[list[Fire], SubmitLater | None]:
        """Submit fires in order until the runner refuses one for now; the fires handled
        (submitted, or failed for good) and, if it stopped early, why. Fires another call is
        submitting already are left out."""
        mine = [f for f in fires if (f.trigger, f.key) not in self._in_flight]
        self._in_flight.update((f.trigger, f.key) for f in mine)
        done: list[Fire] = []
        later: SubmitLater | None = None
        try:
            for fire in mine:
                try:
                    done.append(await self._submit(fire))
                except SubmitLater as exc:
                    later = exc
                    break
            now = time.time()
            await self.store.mark_submitted([f for f in done if f.state == "submitted"], now)
            await self.store.update([f for f in done if f.state == "failed"], now)
        finally:
            self._in_flight.difference_update((f.trigger, f.key) for f in mine)
        return done, later

    async def _submit(self, fire: Fire) -> Fire:
        try:
            job_id = await self.runner.submit(fire.script, fire.params, fire.idempotency_key,
                                              fire.trigger)
        except SubmitLater as exc:
            log.info("trigger_submit_deferred", trigger=fire.trigger, reason=str(exc))
            raise
        except SubmitRefused as exc:
            return self._refused(fire, str(exc))
        log.info("trigger_fired", trigger=fire.trigger, job_id=job_id, kind=fire.kind,
                 path=fire.path, due_at=fire.due_at)
        return fire.with_state("submitted", job_id=job_id, error=None)

    def _refused(self, fire: Fire, error: str) -> Fire:
        log.error("trigger_submit_failed", trigger=fire.trigger, path=fire.path, error=error)
        return fire.with_state("failed", error=error)
