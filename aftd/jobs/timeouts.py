"""Job timeouts: which limit applies, and how a script declares its own.

Precedence: the trigger's ``timeoutS``, else the script's module-level ``TIMEOUT_S`` (a SyncJS
script's ``@timeout`` comment line), else ``[jobs] timeout_s``. Zero means no limit at every level.
"""

from __future__ import annotations

from typing import Any

from aftd.jobs.model import valid_timeout
from aftd.scripts.loader import ScriptError, ScriptInfo

__all__ = ["declared_timeout", "describe_timeout", "initial_timeout", "script_timeout"]

_MISSING = object()


def _limit(seconds: float) -> float | None:
    return None if seconds == 0 else seconds


def initial_timeout(trigger_s: float | None, config_s: float) -> float | None:
    """The limit known before the script is loaded (None: no limit)."""
    return _limit(trigger_s) if trigger_s is not None else _limit(config_s)


def script_timeout(main: Any, current: float | None) -> float | None:
    """The script's ``TIMEOUT_S`` when it declares one, else ``current``."""
    module_globals = getattr(main, "__globals__", None)
    if not isinstance(module_globals, dict):
        return current
    raw = module_globals.get("TIMEOUT_S", _MISSING)
    return current if raw is _MISSING else _declared(raw, "")


def declared_timeout(info: ScriptInfo, current: float | None) -> float | None:
    """Like :func:`script_timeout`, for a script that is not loaded in the daemon (it runs in a
    worker process): its ``TIMEOUT_S`` as read from the source, which must be a literal."""
    if info.timeout_s is None:
        return current
    if info.language == "syncjs":
        seconds = valid_timeout(info.timeout_s)
        if seconds is None:
            raise ScriptError(f"script {info.id!r}: @timeout must be a number of seconds >= 0 "
                              f"(0: no limit), got {info.timeout_s!r}")
        return _limit(seconds)
    return _declared(info.timeout_s, ' (a script with ISOLATION = "process" must give it as '
                                     "a literal)")


def _declared(raw: Any, hint: str) -> float | None:
    seconds = valid_timeout(raw)
    if seconds is None:
        raise ScriptError(f"TIMEOUT_S must be a number of seconds >= 0 (0: no limit), "
                          f"got {raw!r}{hint}")
    return _limit(seconds)


def describe_timeout(limit: float | None) -> str:
    """``"30 s"``, ``"0.5 s"``: the N in "timed out after N s"."""
    if limit is None:
        return "? s"
    return f"{int(limit)} s" if limit == int(limit) else f"{limit:g} s"
