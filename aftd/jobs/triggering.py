"""The runner as triggers use it (:class:`aftd.triggers.ports.JobPort`): a fired job is
submitted exactly as ``POST /v1/jobs`` submits one, through :meth:`Runner.submit`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aftd.jobs.runner import Draining, QueueFull, Runner, StoreUnavailable
from aftd.jobs.store import IdempotencyConflict
from aftd.scripts.loader import ScriptError, requires_tags
from aftd.triggers.ports import FiredJob, SubmitLater, SubmitRefused

__all__ = ["RunnerPort"]


class RunnerPort:
    """``host_tags``: this host's [host] tags when no other host shares its store (a fired job
    needing tags it lacks is refused), None in a fleet; ``trigger_tags``: a trigger's
    ``host_tags`` by its name (looked up at each fire: a reload may change them)."""

    def __init__(self, runner: Runner, *, host_tags: tuple[str, ...] | None = (),
                 trigger_tags: Callable[[str], tuple[str, ...]] = lambda _name: ()) -> None:
        self.runner = runner
        self.host_tags = host_tags
        self.trigger_tags = trigger_tags

    async def submit(self, script_id: str, params: Mapping[str, Any], idempotency_key: str,
                     trigger: str) -> str:
        try:
            script = self.runner.loader.find(script_id=script_id)
        except ScriptError as exc:
            raise SubmitRefused(f"cannot start script {script_id!r}: {exc}") from None
        try:
            tags = tuple(sorted({*requires_tags(script), *self.trigger_tags(trigger)}))
        except ScriptError as exc:
            raise SubmitRefused(str(exc)) from None
        missing = [] if self.host_tags is None else sorted(set(tags) - set(self.host_tags))
        if missing:
            raise SubmitRefused(f"this host lacks the tags {missing} the job requires "
                                "([host] tags), and no other host shares its store")
        try:
            job, _ = await self.runner.submit(script, params, idempotency_key, trigger=trigger,
                                              host_tags=tags)
        except (Draining, QueueFull, StoreUnavailable) as exc:
            raise SubmitLater(str(exc)) from None
        except IdempotencyConflict:  # only if the job store holds a foreign job under the key
            raise SubmitRefused(f"a different job already uses the idempotency key "
                                f"{idempotency_key!r}") from None
        return job.id

    async def get(self, job_id: str) -> FiredJob | None:
        return await self.runner.get(job_id)
