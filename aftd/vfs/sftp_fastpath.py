"""Which asyncssh speed-ups may run, and the record of which ones do (log and metric).

The speed-ups in :mod:`aftd.vfs.sftp_speed` and :mod:`aftd.vfs.sftp_send` replace methods of
asyncssh objects and rely on its private internals. They run only when all of this holds:

* the installed asyncssh is in :data:`TESTED_ASYNCSSH`, the range they were tested with;
* the operator has not turned them off (``AFTD_SFTP_FAST_PATH``, see :func:`allowed`);
* the internals they use are there, and their self-test passes (the GCM send path and the
  write-request builder are checked against asyncssh's own code on every new connection).

Anything else leaves asyncssh's own code in place (slower, never wrong), logs the warning
``sftp_fast_path_disabled`` with the patch and the reason, and sets the gauge
``aftd_sftp_fast_path{patch="..."}`` to 0; a patch that is active sets it to 1. The README's
"SFTP speed-ups" section lists the patches.
"""

from __future__ import annotations

import os
import re

import asyncssh
import structlog

from aftd import metrics

__all__ = ["ENV", "PATCHES", "TESTED_ASYNCSSH", "active", "allowed", "disabled",
           "startup_check", "version_tested"]

log = structlog.get_logger(__name__)

ENV = "AFTD_SFTP_FAST_PATH"
# Every speed-up by name (the metric's label values).
PATCHES = ("coalesce_sends", "skip_ignore_padding", "gcm_send", "sftp_write",
           "feed_whole_packets", "keepalive_throttle", "quiet_logs")
# [lowest, first untested): the asyncssh releases whose internals the patches were tested on.
# Keep in step with the asyncssh pin in pyproject.toml.
TESTED_ASYNCSSH = ((2, 24, 1), (2, 25, 0))
_warned: set[tuple[str, str]] = set()
_checked = False


def version_tested(version: str | None = None) -> bool:
    """True when ``version`` (default: the installed asyncssh) is in :data:`TESTED_ASYNCSSH`."""
    parts = re.findall(r"\d+", version if version is not None else asyncssh.__version__)[:3]
    found = tuple(int(p) for p in parts) + (0,) * (3 - len(parts))
    return TESTED_ASYNCSSH[0] <= found < TESTED_ASYNCSSH[1]


def _env_choice() -> set[str] | None:
    """The patches the environment allows (None: all of them)."""
    raw = os.environ.get(ENV, "").strip().lower()
    if raw in ("", "on", "all", "1", "true", "yes"):
        return None
    if raw in ("off", "none", "0", "false", "no"):
        return set()
    return {p.strip() for p in raw.split(",") if p.strip()}


def allowed(patch: str) -> bool:
    """May ``patch`` be tried? Reports (warning + gauge 0) when it may not.

    ``AFTD_SFTP_FAST_PATH``: unset, ``on`` or ``all``: every patch; ``off``: none (asyncssh's
    own code throughout); or a comma-separated list of the patch names to keep.
    """
    if not version_tested():
        disabled(patch, f"asyncssh {asyncssh.__version__} is outside the tested range "
                 f"{_fmt(TESTED_ASYNCSSH[0])} to before {_fmt(TESTED_ASYNCSSH[1])}")
        return False
    choice = _env_choice()
    if choice is not None and patch not in choice:
        disabled(patch, f"turned off by {ENV}")
        return False
    return True


def active(patch: str) -> None:
    """``patch`` is installed (and passed its self-test, where it has one)."""
    metrics.set_sftp_fast_path(patch, True)


def disabled(patch: str, reason: str) -> None:
    """``patch`` does not run: asyncssh's own code does that work. Warns once per reason."""
    metrics.set_sftp_fast_path(patch, False)
    if (patch, reason) not in _warned:
        _warned.add((patch, reason))
        log.warning("sftp_fast_path_disabled", patch=patch, reason=reason,
                    asyncssh=asyncssh.__version__)


def startup_check() -> None:
    """At start-up (the first sftp VFS configured): report every patch that cannot run in this
    process at all (asyncssh version, ``AFTD_SFTP_FAST_PATH``). Once per process."""
    global _checked
    if _checked:
        return
    _checked = True
    for patch in PATCHES:
        allowed(patch)


def _fmt(v: tuple[int, ...]) -> str:
    return ".".join(map(str, v))
