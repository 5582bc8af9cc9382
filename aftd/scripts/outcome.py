"""The final state of an isolated job, from what its worker reported and how it ended.

The worker runs the script through :func:`aftd.scripts.execute.run_script`, as the runner does
inline, and reports the resulting :class:`~aftd.scripts.execute.Outcome`; this module checks that
report (it comes from an untrusted process) and turns a worker that ended without one into a
failure that says how it died.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Mapping
from typing import Any

from aftd.scripts.execute import Outcome
from aftd.scripts.ipc import ProtocolError

__all__ = ["OUTCOMES", "check_outcome", "describe_exit", "verdict"]

# "finished": the script ran to an outcome; "cancelled": a cancel (SIGTERM) reached it.
OUTCOMES = frozenset({"finished", "cancelled"})
_STATUSES = frozenset({"succeeded", "failed"})
_MAX_ERROR_CHARS = 16384
_INT32 = 1 << 31


def check_outcome(msg: Mapping[str, Any]) -> None:
    """Refuse a ``done`` message that cannot be turned into a job state."""
    outcome = msg.get("outcome")
    if outcome not in OUTCOMES:
        raise ProtocolError(f"unknown outcome {str(outcome)[:100]!r}")
    if outcome == "cancelled":
        return
    if msg.get("status") not in _STATUSES:
        raise ProtocolError(f"unknown status {str(msg.get('status'))[:100]!r}")
    code, error = msg.get("exit_code"), msg.get("error")
    if code is not None and (not isinstance(code, int) or isinstance(code, bool)
                             or not -_INT32 <= code < _INT32):
        raise ProtocolError(f"exit code must be a 32-bit integer, got {str(code)[:50]}")
    if error is not None and not isinstance(error, str):
        raise ProtocolError("error must be a string")


def verdict(outcome: Mapping[str, Any] | None, exitcode: int | None,
            broken: str | None) -> Outcome:
    """The job's outcome; raises CancelledError if a cancel reached the script (the runner
    tells a user's cancel, a timeout and a shutdown apart)."""
    if broken is not None:
        return Outcome("failed", None, f"the script's worker process broke the protocol: {broken}")
    if outcome is None:
        return Outcome("failed", None, describe_exit(exitcode))
    if outcome["outcome"] == "cancelled":
        raise asyncio.CancelledError
    error = outcome.get("error")
    return Outcome(str(outcome["status"]), outcome.get("exit_code"),
                   error[:_MAX_ERROR_CHARS] if isinstance(error, str) else None)


def describe_exit(exitcode: int | None) -> str:
    """How a worker ended without finishing its job, for the job's error."""
    if exitcode is None:
        return "the script's worker process vanished"
    if exitcode < 0:
        try:
            sig = signal.Signals(-exitcode)
        except ValueError:
            return f"the script's worker process was killed by signal {-exitcode}"
        return (f"the script's worker process was killed by signal {sig.name} "
                f"({signal.strsignal(sig) or 'unknown'})")
    return f"the script's worker process exited with code {exitcode} before the script finished"
