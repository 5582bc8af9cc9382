"""Running a script's ``main(job)`` and turning however it ends into an outcome.

This is the one step that executes operator code; everything around it (loading, timeouts,
cancel, recording) lives in the runner. Whatever the script raises fails only its own job: an
exception, ``job.exit(n)``, ``sys.exit(n)`` (0 succeeds), ``KeyboardInterrupt``. Only a
cancellation passes through, because the runner decides what a cancel means.
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aftd.scripts.context import JobContext, JobExit

__all__ = ["Outcome", "outcome_of_exit", "run_script"]

ScriptMain = Callable[[Any], Awaitable[Any]]


@dataclass(frozen=True)
class Outcome:
    status: str  # "succeeded" | "failed"
    exit_code: int | None
    error: str | None


def outcome_of_exit(code: int) -> Outcome:
    """A job that ended with exit code ``code`` (0 succeeded, anything else failed)."""
    if code == 0:
        return Outcome("succeeded", 0, None)
    return Outcome("failed", code, f"script exited with code {code}")


def _from_return(result: Any) -> Outcome:
    if result is None:
        return outcome_of_exit(0)
    if isinstance(result, bool):
        return outcome_of_exit(0 if result else 1)
    if isinstance(result, int):
        return outcome_of_exit(result)
    return Outcome("failed", None, f"main() returned {type(result).__name__}; expected None, "
                                   "an int exit code or a bool")


def _from_system_exit(exc: SystemExit) -> Outcome:
    code = exc.code
    if code is None:
        return outcome_of_exit(0)
    if isinstance(code, int) and not isinstance(code, bool):
        return outcome_of_exit(code)
    # sys.exit("message") means exit status 1 with that message, as for a process.
    return Outcome("failed", 1, f"script exited: {code}")


async def run_script(main: ScriptMain, ctx: JobContext, jlog: Any) -> Outcome:
    """Await ``main(ctx)``; never raises except ``CancelledError``."""
    try:
        outcome = _from_return(await main(ctx))
    except asyncio.CancelledError:
        raise
    except JobExit as exc:
        outcome = outcome_of_exit(exc.code)
    except SystemExit as exc:
        outcome = _from_system_exit(exc)
    except BaseException as exc:  # KeyboardInterrupt, GeneratorExit, any Exception
        message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        jlog.error("job_exception", error=message,
                   traceback="".join(traceback.format_exception(exc)))
        outcome = Outcome("failed", None, message)
    finally:
        await _close(ctx, jlog)
    return outcome


async def _close(ctx: JobContext, jlog: Any) -> None:
    try:
        await ctx.aclose()
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # closing the job's HTTP clients must not change its outcome
        jlog.warning("job_cleanup_failed", error=f"{type(exc).__name__}: {exc}")
