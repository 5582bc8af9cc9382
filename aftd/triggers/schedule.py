"""Due times of a schedule: a 5-field cron expression in an IANA time zone, or every N seconds.

croniter parses the expression and steps through *wall-clock* times (naive datetimes); this
module maps each wall-clock time to an instant with :mod:`zoneinfo`, and that mapping is where
daylight-saving changes are decided, deliberately and the same way on every host:

* a wall-clock time that a change skips (02:30 on the night clocks go from 02:00 to 03:00) is
  due once, at the end of the gap — the instant of the change; several skipped times collapse
  into that one due time;
* a wall-clock time that a change repeats (02:30 on the night clocks go back from 03:00 to
  02:00) is due once, at its first occurrence; the repeated hour fires nothing again.

That is how Vixie/Debian cron treat fixed-time jobs. ``every_s`` ignores the time zone: its due
times are the multiples of ``every_s`` seconds since the Unix epoch, so they neither drift with
restarts nor differ between hosts. Due times are instants (seconds since the epoch, UTC), the
key a fire is claimed under.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["MACROS", "Schedule", "check_cron", "iso", "load_zone"]

MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
# A cron expression has at most one match a minute, and a DST change moves clocks by hours at
# most: this many candidates always reach past any overlap or search margin.
_MAX_STEPS = 10_000
# Wall-clock times map to instants monotonically, but the wall clock at an instant inside a
# repeated hour lies behind times already due: a search backwards starts this far ahead
# (tzdata's largest change is 2 hours).
_MAX_SHIFT = timedelta(hours=4)


def iso(t: float) -> str:
    """An instant as ISO 8601 UTC with milliseconds (``scheduledAt``, fire keys)."""
    text = datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def load_zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``, or ValueError naming it."""
    if not name or name.startswith("/") or ".." in name:
        raise ValueError(f"unknown time zone {name!r} (an IANA name such as Europe/Berlin)")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {name!r} (an IANA name such as "
                         "Europe/Berlin)") from None


def check_cron(expr: str) -> None:
    """ValueError unless ``expr`` is a 5-field cron expression (or a macro) that ever matches."""
    from croniter import CroniterBadCronError, CroniterBadDateError, croniter

    text = expr.strip()
    if text.startswith("@"):
        if text not in MACROS:
            raise ValueError(f"unknown macro {text!r}; known: {', '.join(MACROS)}")
    elif len(text.split()) != 5:
        raise ValueError(f"must have 5 fields (minute hour day-of-month month day-of-week), "
                         f"got {len(text.split())}: {expr!r}")
    try:
        croniter(text, datetime(2000, 1, 1)).get_next(datetime)
    except CroniterBadDateError:
        raise ValueError(f"never matches: {expr!r}") from None
    except (CroniterBadCronError, ValueError, KeyError) as exc:
        raise ValueError(f"is not a valid cron expression ({exc}): {expr!r}") from None


class Schedule:
    """The due times of one schedule trigger."""

    def __init__(self, *, cron: str = "", every_s: float | None = None,
                 timezone: str = "UTC") -> None:
        if bool(cron) == (every_s is not None):
            raise ValueError("exactly one of cron or every_s")
        self.cron = cron.strip()
        self.every_s = every_s
        self.zone = load_zone(timezone)
        if self.cron:
            check_cron(self.cron)

    def next_after(self, t: float) -> float:
        """The first due time strictly after the instant ``t``."""
        if self.every_s is not None:
            return (math.floor(t / self.every_s) + 1) * self.every_s
        from croniter import croniter

        it = croniter(self.cron, self._wall(t))
        for _ in range(_MAX_STEPS):
            due = self._instant(it.get_next(datetime))
            if due > t:
                return due
        raise RuntimeError(f"no due time after {t} for {self.cron!r}")

    def last_at_or_before(self, t: float) -> float:
        """The latest due time at or before the instant ``t``."""
        if self.every_s is not None:
            return math.floor(t / self.every_s) * self.every_s
        from croniter import croniter

        it = croniter(self.cron, self._wall(t) + _MAX_SHIFT)
        for _ in range(_MAX_STEPS):
            due = self._instant(it.get_prev(datetime))
            if due <= t:
                return due
        raise RuntimeError(f"no due time before {t} for {self.cron!r}")

    # -- wall clock <-> instants ------------------------------------------------------------
    def _wall(self, t: float) -> datetime:
        """The wall-clock time at ``t``, whole seconds (cron has minutes at most)."""
        return datetime.fromtimestamp(math.floor(t), self.zone).replace(tzinfo=None)

    def _instant(self, wall: datetime) -> float:
        """The instant a wall-clock time is due at (see the module docstring for DST)."""
        first = wall.replace(tzinfo=self.zone, fold=0).timestamp()
        second = wall.replace(tzinfo=self.zone, fold=1).timestamp()
        if first == second:
            return first
        if self._wall(first) == wall:
            return min(first, second)  # repeated: its first occurrence
        return self._gap_end(min(first, second), max(first, second))

    def _gap_end(self, lo: float, hi: float) -> float:
        """The instant of the change inside (lo, hi]: the first whose offset is the new one."""
        new = datetime.fromtimestamp(hi, self.zone).utcoffset()
        lo_s, hi_s = math.floor(lo), math.ceil(hi)
        while hi_s - lo_s > 1:
            mid = (lo_s + hi_s) // 2
            if datetime.fromtimestamp(mid, self.zone).utcoffset() == new:
                hi_s = mid
            else:
                lo_s = mid
        return float(hi_s)
