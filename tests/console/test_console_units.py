"""Units of the console's server side: sessions, the throughput ring, the counting progress
sink, and the static files as shipped."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from aftd import progress
from aftd.apikeys import KeyRing, digest
from aftd.authconfig import ApiKeyConfig
from aftd.console.web import load_static
from aftd.jobs.model import Progress
from aftd.sessions import SessionStore
from aftd.throughput import BUCKET_S, ThroughputRing


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_session_is_found_by_its_token_and_only_an_hmac_of_it_is_kept() -> None:
    store = SessionStore(ttl_s=60, max_sessions=10)
    token, session = store.create("ops", "a" * 64)
    assert store.get(token) == session
    assert store.get(token + "x") is None and store.get("") is None and store.get(None) is None
    kept = repr(store.__dict__)
    assert token not in kept
    assert session.csrf_token != token and len(token) >= 40


def test_a_session_expires_and_sign_out_ends_it() -> None:
    clock = Clock()
    store = SessionStore(ttl_s=60, max_sessions=10, clock=clock)
    token, session = store.create("ops", "a" * 64)
    assert session.expires_at == clock.now + 60
    clock.now += 59
    assert store.get(token) is not None
    clock.now += 1
    assert store.get(token) is None and len(store) == 0
    token, _ = store.create("ops", "a" * 64)
    assert store.drop(token) and store.get(token) is None and not store.drop(token)


def test_sessions_are_bounded_the_one_closest_to_expiry_goes_first() -> None:
    clock = Clock()
    store = SessionStore(ttl_s=60, max_sessions=3, clock=clock)
    tokens = []
    for _ in range(5):
        tokens.append(store.create("ops", "a" * 64)[0])
        clock.now += 1
    assert len(store) == 3
    assert [store.get(t) is not None for t in tokens] == [False, False, True, True, True]
    store.configure(ttl_s=60, max_sessions=1)
    assert [store.get(t) is not None for t in tokens] == [False] * 4 + [True]


def test_the_csrf_check_needs_the_exact_token() -> None:
    _, session = SessionStore(60, 10).create("ops", "a" * 64)
    assert session.csrf_ok(session.csrf_token)
    for bad in (None, "", session.csrf_token[:-1], session.csrf_token + "x", "é"):
        assert not session.csrf_ok(bad)


def test_a_session_speaks_for_the_key_as_configured_now() -> None:
    key = ApiKeyConfig(name="ops", sha256=digest("k1"))
    ring = KeyRing([key])
    assert ring.by_digest(key.sha256, "127.0.0.1").key == key
    assert ring.by_digest(key.sha256, "127.0.0.1").allowed
    assert not ring.by_digest(key.sha256, "10.1.2.3").allowed
    assert KeyRing([ApiKeyConfig(name="ops", sha256=digest("k2"))]).by_digest(
        key.sha256, "127.0.0.1").key is None


def test_the_throughput_ring_keeps_one_bucket_per_minute_for_an_hour() -> None:
    clock = Clock(60 * 1000.0 + 5)
    ring = ThroughputRing(minutes=60, clock=clock)
    ring.add(100)
    ring.add(50)
    ring.add(0)
    ring.add(-3)
    series = ring.series()
    assert len(series) == 60 and series[-1] == (60 * 1000.0, 150)
    assert all(n == 0 for _, n in series[:-1])
    clock.now += BUCKET_S
    ring.add(7)
    assert ring.series()[-2:] == [(60 * 1000.0, 150), (60 * 1001.0, 7)]
    clock.now += 59 * BUCKET_S  # the first minute leaves the window
    ring.add(1)
    series = ring.series()
    assert series[0] == (60 * 1001.0, 7) and series[-1] == (60 * 1060.0, 1)
    assert sum(n for _, n in series) == 8
    clock.now += 3600 * 5  # hours later, the same slots hold nothing stale
    assert sum(n for _, n in ring.series()) == 0
    with pytest.raises(ValueError, match="at least 1"):
        ThroughputRing(minutes=0)


def test_the_counted_sink_feeds_the_job_and_the_bytes_observers() -> None:
    seen: list[int] = []
    progress.add_bytes_observer(seen.append)
    try:
        job = Progress()
        sink = progress.CountedSink(job)
        sink.add_total(files=2, nbytes=300)
        sink.advance(nbytes=100)
        sink.advance(files=1)
        sink.advance(files=1, nbytes=200)
        assert (job.files_done, job.files_total, job.bytes_done, job.bytes_total) == (
            2, 2, 300, 300)
        assert seen == [100, 200]
    finally:
        progress._BYTES_OBSERVERS.remove(seen.append)


def test_the_shipped_pages_load_only_their_own_files_and_never_use_inner_html() -> None:
    files = load_static()
    assert {"index.html", "app.js", "app.css", "api.js", "dom.js"} <= set(files)
    html = files["index.html"][0].decode()
    # Every script and stylesheet is one of the console's own files.
    for ref in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert ref.startswith("/ui/"), ref
        if ref.startswith("/ui/static/"):
            assert ref.rsplit("/", 1)[1] in files, ref
    for name, (body, ctype) in files.items():
        text = body.decode()
        if name.endswith(".js"):
            assert ctype.startswith("text/javascript")
            assert "innerHTML" not in text and "outerHTML" not in text, name
            assert "insertAdjacentHTML" not in text and "document.write" not in text, name
            assert "eval(" not in text and "new Function" not in text, name
            assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), name
    static = Path(__file__).resolve().parents[2] / "aftd" / "console" / "static"
    assert sorted(files) == sorted(p.name for p in static.iterdir() if p.is_file())
