"""Running one job's script under its timeout: found and loaded off the event loop, inline or
in a worker process, and the outcome turned into the job's final state."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import structlog

from aftd import executors
from aftd.jobs.model import Job, JobState
from aftd.jobs.runstate import Env, Final
from aftd.jobs.timeouts import declared_timeout, describe_timeout, initial_timeout, script_timeout
from aftd.scripts.context import JobContext
from aftd.scripts.execute import Outcome, run_script
from aftd.scripts.isolation import WorkerPool, wants_process
from aftd.scripts.loader import ScriptError, ScriptInfo, ScriptLoader, ScriptMain

__all__ = ["execute", "is_timeout"]

_TIMED_OUT_MARK = "timed out after"


async def execute(job: Job, env: Env, workers: WorkerPool | None) -> Final:
    """Load the script and run it under the job's timeout."""
    jlog = structlog.get_logger("aftd.job")
    jlog.info("job_started")
    loop = asyncio.get_running_loop()
    begun = loop.time()
    limit = initial_timeout(job.timeout_s, env.jobs.timeout_s)
    try:
        async with asyncio.timeout_at(_deadline(begun, limit)) as tm:
            try:
                # stat() and a parse of a changed file: not on the event loop; found and
                # loaded in one trip to the thread.
                info, main = await executors.run(executors.SCRIPTS, functools.partial(
                    _find_and_load, env.loader, job.script_id, workers))
                if job.timeout_s is None:
                    limit = script_timeout(main, limit) if main is not None \
                        else declared_timeout(info, limit)
                    tm.reschedule(_deadline(begun, limit))
            except ScriptError as exc:
                jlog.error("script_load_failed", error=str(exc))
                return Final(JobState.FAILED, None, str(exc))
            if main is None:
                assert workers is not None
                outcome = await workers.run(job, info, jlog, env.services)
            else:
                ctx = JobContext(job.id, job.script_id, job.params, jlog, env.services)
                outcome = await run_script(main, ctx, jlog)
    except TimeoutError:
        if not tm.expired():
            raise
        return _timed_out(jlog, limit)
    if tm.expired():  # the script swallowed the cancellation and returned
        return _timed_out(jlog, limit)
    return _from_outcome(outcome)


def is_timeout(final: Final) -> bool:
    return final.error is not None and _TIMED_OUT_MARK in final.error and \
        final.status is JobState.FAILED


def _timed_out(jlog: Any, limit: float | None) -> Final:
    message = f"job {_TIMED_OUT_MARK} {describe_timeout(limit)}"
    jlog.error("job_timed_out", timeout_s=limit)
    return Final(JobState.FAILED, None, message)


def _find_and_load(loader: ScriptLoader, script_id: str,
                   workers: WorkerPool | None) -> tuple[ScriptInfo, ScriptMain | None]:
    """The script and its ``main``; None for a script that runs in a worker process
    (``ISOLATION = "process"``), which is not loaded here."""
    info = loader.find(script_id=script_id)
    return info, None if wants_process(info, workers) else loader.load_main(info)


def _deadline(begun: float, limit: float | None) -> float | None:
    return None if limit is None else begun + limit


def _from_outcome(outcome: Outcome) -> Final:
    return Final(JobState(outcome.status), outcome.exit_code, outcome.error)
