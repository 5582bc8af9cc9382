"""What an API key may do: its scopes, and the scripts it may trigger (README, "Scoped API keys").

A route of the API names the one scope it needs (:mod:`aftd.api.registry`); ``admin`` grants
every scope. A key's ``scripts`` are glob patterns (``fnmatch``, case-sensitive) of the script
ids it may trigger. Both default to everything, so a key configured without them keeps the
access every key had before scopes existed.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from fnmatch import fnmatchcase
from typing import Literal

__all__ = ["ALL_SCOPES", "ANY_KEY", "Scope", "effective", "grants", "script_allowed"]


class Scope(enum.StrEnum):
    JOBS_TRIGGER = "jobs:trigger"
    JOBS_READ = "jobs:read"
    JOBS_CANCEL = "jobs:cancel"
    TRIGGERS_MANAGE = "triggers:manage"
    REPORTS_MANAGE = "reports:manage"
    METRICS_READ = "metrics:read"
    ADMIN = "admin"


ScopeName = Literal["jobs:trigger", "jobs:read", "jobs:cancel", "triggers:manage",
                    "reports:manage", "metrics:read", "admin"]
ALL_SCOPES: tuple[ScopeName, ...] = ("jobs:trigger", "jobs:read", "jobs:cancel",
                                     "triggers:manage", "reports:manage", "metrics:read",
                                     "admin")
# What a route declares when any valid key may call it, whatever its scopes (the key's own
# description, the API document, health).
ANY_KEY = "any"


def grants(scopes: Iterable[str], needed: str) -> bool:
    """Whether a key holding ``scopes`` may call a route that needs ``needed``."""
    held = set(scopes)
    return needed == ANY_KEY or needed in held or Scope.ADMIN in held


def effective(scopes: Iterable[str]) -> list[str]:
    """The scopes a key holds in effect, in the documented order (``admin`` holds them all)."""
    held = set(scopes)
    return [s for s in ALL_SCOPES if s in held or Scope.ADMIN in held]


def script_allowed(patterns: Iterable[str], script_id: str) -> bool:
    return any(fnmatchcase(script_id, p) for p in patterns)
