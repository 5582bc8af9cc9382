"""Cost of scrubbing secrets: per log line and per log event, by number of registered values.

    python bench/redact_bench.py [--values 10 100 1000] [--repeat 5]

For N registered values (random 32-character tokens, as resolved secrets look; each registers
its escaped forms too) it prints, as the median of --repeat runs of 5,000 calls:

* ``ac``: :func:`aftd.redact.scrub` (Aho-Corasick, pyahocorasick) on a typical ~250-character
  JSON log line, without a secret in it (``miss``) and with one (``hit``);
* ``regex``: the alternative the redactor replaced — one compiled alternation of every form,
  longest first, ``pattern.sub`` — on the same lines;
* ``event``: the whole redaction step of the logging pipeline for one event with 8 values
  (strings, numbers, an exception, a dict);
* ``build``: time to rebuild the automaton, and to compile the regex, after the set changed.

Figures are microseconds per call; ratios are regex / ac. Noisy shared machine: compare within
one run.
"""

from __future__ import annotations

import argparse
import re
import secrets
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aftd import redact
from aftd.logging import _redact

LINE = ('{"event": "copied", "files": 12, "bytes": 123456, "src": "/srv/archive/in/'
        'file-0001.csv", "dst": "partner:/inbound/file-0001.csv", "job_id": '
        '"5b0e8f0c-2f35-4a8e-9d1c-0d6f3f1f6a11", "level": "info", '
        '"timestamp": "2025-01-01T00:00:00.000000Z"}')
CALLS = 5000


def per_call_us(fn: Callable[[], Any], repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(CALLS):
            fn()
        runs.append((time.perf_counter() - start) / CALLS * 1e6)
    return statistics.median(runs)


def timed_ms(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def event(secret: str) -> dict[str, Any]:
    return {"event": "copied", "files": 12, "bytes": 123456, "src": "/srv/a/b.csv",
            "error": RuntimeError(f"upstream said no to {secret}"), "job_id": "5b0e8f0c",
            "detail": {"status": 500, "body": "nope"}, "level": "info"}


def bench(n: int, repeat: int) -> None:
    redact.REDACTOR.clear()
    redact.configure(max_age_s=1e9, max_values=max(n, 16))
    values = [secrets.token_urlsafe(24) for _ in range(n)]
    for v in values:
        redact.register(v)
    build_ac = timed_ms(lambda: redact.scrub("x" * 8))  # the rebuild happens at this scrub
    forms = sorted({f for v in values for f in redact.forms_of(v)}, key=len, reverse=True)
    pattern: re.Pattern[str] | None = None

    def compile_regex() -> None:
        nonlocal pattern
        pattern = re.compile("|".join(re.escape(f) for f in forms))

    build_re = timed_ms(compile_regex)
    assert pattern is not None
    hit = LINE[:-1] + f', "token": "{values[n // 2]}"}}'
    assert redact.MASK in redact.scrub(hit)
    rx = pattern
    ac_miss = per_call_us(lambda: redact.scrub(LINE), repeat)
    ac_hit = per_call_us(lambda: redact.scrub(hit), repeat)
    re_miss = per_call_us(lambda: rx.sub(redact.MASK, LINE), repeat)
    re_hit = per_call_us(lambda: rx.sub(redact.MASK, hit), repeat)
    ev = event(values[0])
    ev_us = per_call_us(lambda: _redact(None, "info", dict(ev)), repeat)
    print(f"{n:>5} values ({len(forms):>5} forms): "
          f"ac miss {ac_miss:6.2f}  hit {ac_hit:6.2f} | regex miss {re_miss:8.2f}  "
          f"hit {re_hit:8.2f} | ratio {re_miss / ac_miss:6.1f}x | event {ev_us:6.2f} | "
          f"build ac {build_ac:7.2f} ms  regex {build_re:7.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print("microseconds per call (median); build in milliseconds")
    for n in args.values:
        bench(n, args.repeat)


if __name__ == "__main__":
    main()
