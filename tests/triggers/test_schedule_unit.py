"""Due times of schedules: cron in a time zone across DST changes, every_s; config errors."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from aftd.config import SCRIPT_SUFFIXES, parse_config
from aftd.errors import ConfigError
from aftd.scripts.loader import LANGUAGES
from aftd.triggers.schedule import Schedule, check_cron


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M")


def series(s: Schedule, start: float, n: int) -> list[str]:
    out, t = [], start
    for _ in range(n):
        t = s.next_after(t)
        out.append(iso(t))
    return out


def test_a_daily_time_in_berlin_follows_the_local_clock_across_both_changes() -> None:
    s = Schedule(cron="0 9 * * *", timezone="Europe/Berlin")
    # 09:00 CET is 08:00 UTC, 09:00 CEST is 07:00 UTC.
    assert series(s, utc(2026, 3, 28, 12), 2) == ["2026-03-29 07:00", "2026-03-30 07:00"]
    assert series(s, utc(2026, 10, 24, 12), 2) == ["2026-10-25 08:00", "2026-10-26 08:00"]


def test_a_time_the_spring_change_skips_fires_once_at_the_end_of_the_gap() -> None:
    # 2026-03-29 in Berlin: 02:00 CET jumps to 03:00 CEST (01:00 UTC); 02:30 does not exist.
    s = Schedule(cron="30 2 * * *", timezone="Europe/Berlin")
    assert series(s, utc(2026, 3, 28, 12), 2) == ["2026-03-29 01:00", "2026-03-30 00:30"]
    every = Schedule(cron="*/30 * * * *", timezone="Europe/Berlin")
    # 01:00, 01:30 CET; 02:00, 02:30 and 03:00 collapse into the change; then 03:30 CEST.
    assert series(every, utc(2026, 3, 28, 23, 50), 4) == [
        "2026-03-29 00:00", "2026-03-29 00:30", "2026-03-29 01:00", "2026-03-29 01:30"]


def test_a_time_the_autumn_change_repeats_fires_once_at_its_first_occurrence() -> None:
    # 2026-10-25 in Berlin: 03:00 CEST goes back to 02:00 CET (01:00 UTC); 02:xx happens twice.
    s = Schedule(cron="30 2 * * *", timezone="Europe/Berlin")
    assert series(s, utc(2026, 10, 24, 12), 2) == ["2026-10-25 00:30", "2026-10-26 01:30"]
    every = Schedule(cron="*/30 * * * *", timezone="Europe/Berlin")
    assert series(every, utc(2026, 10, 24, 23, 50), 4) == [
        "2026-10-25 00:00", "2026-10-25 00:30", "2026-10-25 02:00", "2026-10-25 02:30"]
    # Inside the repeated hour (02:10 CET, the second time round) the latest due time is the
    # first 02:30, already past; the next is 03:00 CET.
    inside = utc(2026, 10, 25, 1, 10)
    assert iso(every.last_at_or_before(inside)) == "2026-10-25 00:30"
    assert iso(every.next_after(inside)) == "2026-10-25 02:00"


def test_new_york_and_the_southern_hemisphere() -> None:
    ny = Schedule(cron="30 2 * * *", timezone="America/New_York")  # 2026-03-08 02:00 -> 03:00
    assert series(ny, utc(2026, 3, 7, 12), 2) == ["2026-03-08 07:00", "2026-03-09 06:30"]
    syd = Schedule(cron="0 12 * * *", timezone="Australia/Sydney")  # DST ends 2026-04-05
    assert series(syd, utc(2026, 4, 3, 12), 3) == [
        "2026-04-04 01:00", "2026-04-05 02:00", "2026-04-06 02:00"]


def test_last_at_or_before_includes_the_instant_itself() -> None:
    s = Schedule(cron="0 * * * *", timezone="Asia/Kolkata")  # UTC+5:30: hh:00 is hh:30 UTC
    assert iso(s.last_at_or_before(utc(2026, 1, 1, 10, 30))) == "2026-01-01 10:30"
    assert iso(s.last_at_or_before(utc(2026, 1, 1, 10, 29))) == "2026-01-01 09:30"


def test_every_s_is_anchored_to_the_epoch() -> None:
    s = Schedule(every_s=300)
    assert s.next_after(1000.5) == 1200 and s.next_after(1200) == 1500
    assert s.last_at_or_before(1200) == 1200 and s.last_at_or_before(1199.9) == 900


@pytest.mark.parametrize(("expr", "reason"), [
    ("0 2 * *", "must have 5 fields"), ("0 2 * * * *", "must have 5 fields"),
    ("61 * * * *", "is not a valid cron expression"), ("0 2 30 2 *", "never matches"),
    ("@reboot", "unknown macro"),
])
def test_bad_cron_expressions(expr: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        check_cron(expr)


@pytest.mark.parametrize(("entry", "key", "reason"), [
    ({"type": "schedule", "cron": "0 2 * *"}, "triggers[1].cron", "must have 5 fields"),
    ({"type": "schedule", "cron": "0 2 * * *", "timezone": "Mars/Olympus"},
     "triggers[1].timezone", "unknown time zone 'Mars/Olympus'"),
    ({"type": "schedule"}, "triggers[1].cron", "exactly one of cron or every_s"),
    ({"type": "schedule", "every_s": 5, "cron": "* * * * *"}, "triggers[1].cron", "exactly one"),
    ({"type": "schedule", "every_s": 5, "script": "nope"}, "triggers[1].script",
     "unknown script 'nope'"),
    ({"type": "schedule", "every_s": 5, "overlap": "sometimes"}, "triggers[1].overlap",
     "must be one of skip, queue, allow"),
    ({"type": "watch", "vfs": "elsewhere"}, "triggers[1].vfs", "unknown VFS 'elsewhere'"),
    ({"type": "watch", "vfs": "drop", "after": "move"}, "triggers[1].move_to", "is required"),
    ({"type": "watch", "vfs": "drop", "path": "../up"}, "triggers[1].path", "no '..'"),
    ({"type": "watch", "vfs": "drop", "params": {"path": "x"}}, "triggers[1].params.path",
     "is set by the trigger itself"),
    ({"type": "watch", "vfs": "drop", "poll_s": "3"}, "triggers[1].poll_s", "must be a number"),
    ({"type": "watch", "vfs": "drop", "colour": "red"}, "triggers[1].colour", "unknown key"),
    ({"type": "sometimes"}, "triggers[1].type", "must be one of schedule, watch"),
    ({"type": "schedule", "every_s": 5, "name": "first"}, "triggers[1].name", "duplicate"),
    ({"type": "schedule", "every_s": 5, "name": "a b"}, "triggers[1].name", "must be 1-128"),
])
def test_a_bad_trigger_is_a_config_error_naming_its_key(
        tmp_path: Path, entry: dict[str, object], key: str, reason: str) -> None:
    (tmp_path / "sync.py").write_text("async def main(job):\n    return 0\n")
    first = {"name": "first", "type": "schedule", "every_s": 60, "script": "sync"}
    data = {"paths": {"scripts_dir": str(tmp_path)},
            "vfs": {"drop": {"type": "local", "root": str(tmp_path)}},
            "triggers": [first, {"name": "second", "script": "sync", **entry}]}
    with pytest.raises(ConfigError) as err:
        parse_config(data, "aftd.toml", base=tmp_path)
    assert str(err.value).startswith(f"aftd.toml: {key}: "), str(err.value)
    assert reason in str(err.value)


def test_a_trigger_may_start_a_syncjs_script_but_not_an_ambiguous_id(tmp_path: Path) -> None:
    (tmp_path / "relay.js").write_text("function main() { return 0; }\n")
    data = {"paths": {"scripts_dir": str(tmp_path)},
            "triggers": [{"name": "js", "type": "schedule", "every_s": 60, "script": "relay"}]}
    cfg = parse_config(data, "aftd.toml", base=tmp_path)
    assert cfg.triggers[0].script == "relay"
    (tmp_path / "relay.py").write_text("async def main(job):\n    return 0\n")
    with pytest.raises(ConfigError) as err:
        parse_config(data, "aftd.toml", base=tmp_path)
    assert str(err.value).startswith("aftd.toml: triggers[0].script: "), str(err.value)
    assert "ambiguous" in str(err.value)
    # The config checks scripts as the loader finds them, without importing it.
    assert tuple(LANGUAGES) == SCRIPT_SUFFIXES
