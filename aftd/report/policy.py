"""Retry policy of report delivery: which answers are retried, and when the next try is due.

Pure functions of their inputs (plus a random source for jitter), so they are tested directly.
"""

from __future__ import annotations

import email.utils
import random
from dataclasses import dataclass
from enum import Enum

from aftd.config import ReportsConfig

__all__ = ["Outcome", "Schedule", "backoff_delay", "classify", "parse_retry_after",
           "schedule_retry"]


class Outcome(Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    ABANDON = "abandon"


def classify(status: int) -> Outcome:
    """2xx delivered; 408, 429 and 5xx are transient; anything else will not improve by retrying.

    Redirects are not followed (a POST re-sent elsewhere could leak the bearer token), so a 3xx
    is treated like a refusal.
    """
    if 200 <= status < 300:
        return Outcome.DELIVERED
    if status in (408, 429) or 500 <= status < 600:
        return Outcome.RETRY
    return Outcome.ABANDON


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date); None if absent
    or unparseable (then the ordinary backoff applies)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(int(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a naive result means "-0000"
        return None
    return max(0.0, when.timestamp() - now)


def backoff_delay(attempt: int, cfg: ReportsConfig, rng: random.Random | None = None) -> float:
    """Exponential backoff with "equal jitter" after failed attempt number ``attempt`` (1-based).

    Half the delay is fixed so retries never bunch up at zero; the other half is random so 1,000
    reports failing together do not return together.
    """
    exp = min(attempt - 1, 60)  # bound the exponent: 2**60 is already far past any cap
    base = min(cfg.max_backoff_s, cfg.initial_backoff_s * (2.0 ** exp))
    r = (rng or random).random()
    return base / 2 + r * base / 2


@dataclass(frozen=True)
class Schedule:
    """When to try again, or None to give up because the deadline has passed."""

    next_at: float | None
    delay_s: float


def schedule_retry(*, attempt: int, now: float, pending_at: float, cfg: ReportsConfig,
                   retry_after: float | None, rng: random.Random | None = None) -> Schedule:
    """Next attempt time after a transient failure.

    ``Retry-After`` wins over the backoff when present. The deadline counts from when the report
    became pending; a delay that would overshoot it is shortened to one last try at the deadline,
    and a failure at or after the deadline gives up.
    """
    deadline = pending_at + cfg.deadline_s
    if now >= deadline:
        return Schedule(next_at=None, delay_s=0.0)
    delay = retry_after if retry_after is not None else backoff_delay(attempt, cfg, rng)
    return Schedule(next_at=min(now + delay, deadline), delay_s=min(delay, deadline - now))
