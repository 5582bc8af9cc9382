"""Modification times in object metadata, written the way rclone writes them per store.

rclone keeps a file's modification time in user metadata under ``mtime``: on Azure Blob and
Google Cloud Storage as RFC 3339 with nanoseconds (``2020-09-13T12:26:40.123456001Z``), on GCS
also as gsutil's ``goog-reserved-file-mtime`` (whole seconds); S3 uses decimal seconds. Reading
accepts all three, so a file either tool uploaded keeps its time for the other.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime

__all__ = ["GSUTIL_MTIME_KEY", "MTIME_KEY", "format_rfc3339", "metadata_mtime", "parse_mtime",
           "stored_mtime"]

MTIME_KEY = "mtime"
GSUTIL_MTIME_KEY = "goog-reserved-file-mtime"
_RFC3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|z|[+-]\d{2}:\d{2})$")


def format_rfc3339(t: float) -> str:
    """``t`` (seconds since the epoch) as RFC 3339 UTC with nanoseconds."""
    whole = math.floor(t)
    nanos = min(round((t - whole) * 1e9), 999_999_999)
    stamp = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{nanos:09d}Z"


def parse_mtime(value: object) -> float | None:
    """Seconds since the epoch from decimal seconds or RFC 3339; None if it is neither."""
    if not isinstance(value, str):
        return None
    try:
        t = float(value)
    except ValueError:
        return _parse_rfc3339(value.strip())
    return t if math.isfinite(t) else None


def _parse_rfc3339(text: str) -> float | None:
    m = _RFC3339.match(text)
    if m is None:
        return None
    day, clock, frac, zone = m.groups()
    zone = "+00:00" if zone in ("Z", "z") else zone
    try:
        base = datetime.fromisoformat(f"{day}T{clock}{zone}").timestamp()
    except ValueError:
        return None
    return base + (int(frac.ljust(9, "0")) / 1e9 if frac else 0.0)


def metadata_mtime(meta: Mapping[str, str] | None) -> float | None:
    """The modification time kept in metadata (``mtime``, else gsutil's key; names compared
    case-insensitively), or None."""
    lowered = {k.lower(): v for k, v in (meta or {}).items()}
    for key in (MTIME_KEY, GSUTIL_MTIME_KEY):
        t = parse_mtime(lowered.get(key))
        if t is not None:
            return t
    return None


def stored_mtime(meta: Mapping[str, str] | None, fallback: float) -> float:
    """:func:`metadata_mtime`, else ``fallback`` (the object's last-modified time)."""
    t = metadata_mtime(meta)
    return fallback if t is None else t
