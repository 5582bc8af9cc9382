"""Retry classification, Retry-After parsing and the backoff schedule (pure functions)."""

from __future__ import annotations

import email.utils
import random

import pytest

from aftd.config import ReportsConfig
from aftd.report.policy import (
    Outcome,
    backoff_delay,
    classify,
    parse_retry_after,
    schedule_retry,
)

CFG = ReportsConfig(deadline_s=100.0, initial_backoff_s=1.0, max_backoff_s=8.0)


@pytest.mark.parametrize(("status", "outcome"), [
    (200, Outcome.DELIVERED), (201, Outcome.DELIVERED), (204, Outcome.DELIVERED),
    (408, Outcome.RETRY), (429, Outcome.RETRY), (500, Outcome.RETRY), (502, Outcome.RETRY),
    (503, Outcome.RETRY), (599, Outcome.RETRY),
    (400, Outcome.ABANDON), (401, Outcome.ABANDON), (403, Outcome.ABANDON),
    (404, Outcome.ABANDON), (409, Outcome.ABANDON), (422, Outcome.ABANDON),
    (301, Outcome.ABANDON), (307, Outcome.ABANDON),
])
def test_classify(status: int, outcome: Outcome) -> None:
    assert classify(status) is outcome


def test_retry_after_forms() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after(None, now) is None
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after(" 0 ", now) == 0.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(date, now) == pytest.approx(30.0, abs=1.0)
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert parse_retry_after(past, now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("-5", now) is None
    assert parse_retry_after("1.5", now) is None


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    rng = random.Random(7)
    for attempt, base in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (10, 8.0), (10_000, 8.0)]:
        for _ in range(50):
            d = backoff_delay(attempt, CFG, rng)
            assert base / 2 <= d <= base
    # Jitter: not every report retries at the same moment.
    assert len({backoff_delay(3, CFG, rng) for _ in range(20)}) > 1


def test_schedule_prefers_retry_after_and_respects_deadline() -> None:
    s = schedule_retry(attempt=1, now=10.0, pending_at=0.0, cfg=CFG, retry_after=42.0)
    assert (s.next_at, s.delay_s) == (52.0, 42.0)
    # An overshoot becomes one last try at the deadline.
    s = schedule_retry(attempt=1, now=90.0, pending_at=0.0, cfg=CFG, retry_after=42.0)
    assert s.next_at == 100.0
    s = schedule_retry(attempt=1, now=10.0, pending_at=0.0, cfg=CFG, retry_after=None,
                       rng=random.Random(1))
    assert s.next_at is not None
    assert 10.5 <= s.next_at <= 11.0
    # At or after the deadline: give up.
    assert schedule_retry(attempt=9, now=100.0, pending_at=0.0, cfg=CFG,
                          retry_after=None).next_at is None
