"""The runner as triggers see it: submit a job, look a job up.

Triggers sit beside the API, above the job runner, but they depend on this small interface
instead of on the runner itself, so this package needs nothing of ``aftd.jobs`` (which needs
the config, which holds the triggers' config). The daemon hands in the adapter
:class:`aftd.jobs.triggering.RunnerPort`, which calls ``Runner.submit`` exactly as
``POST /v1/jobs`` does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

__all__ = ["FiredJob", "JobPort", "SubmitLater", "SubmitRefused"]


class SubmitLater(Exception):
    """The runner cannot take the job now (draining, queue full, store failing); the fire
    stays claimed and is submitted later."""


class SubmitRefused(Exception):
    """The job cannot be created as asked (an unknown script); the message says why."""


class FiredJob(Protocol):
    """What triggers read of a job record."""

    @property
    def id(self) -> str: ...

    @property
    def status(self) -> str: ...

    @property
    def error(self) -> str | None: ...

    @property
    def trigger(self) -> str | None: ...

    @property
    def idempotency_key(self) -> str | None: ...

    @property
    def terminal(self) -> bool: ...


class JobPort(Protocol):
    async def submit(self, script_id: str, params: Mapping[str, Any], idempotency_key: str,
                     trigger: str) -> str:
        """Queue a job through the runner; its id (the same job again for the same key).
        Raises :class:`SubmitLater` or :class:`SubmitRefused`."""

    async def get(self, job_id: str) -> FiredJob | None: ...
