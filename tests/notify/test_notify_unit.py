"""Notifications without a daemon: the config, the bodies, the store with its intents, the
service's matching and recovery, and the channel's requests (real SQLite, real secret chain,
a real receiver where something is sent)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from aftd import notify
from aftd.config import ReportsConfig, parse_config
from aftd.errors import ConfigError
from aftd.jobs.model import Job, JobState, Progress
from aftd.notify.channel import NotifyChannel, sign
from aftd.notify.render import human_bytes, slack_text
from aftd.notify.service import Notifications, idempotency_key
from aftd.notify.store import SqliteNotifyStore
from aftd.notifyconfig import NotifyConfig
from aftd.report.delivery import PreparationError
from aftd.report.outbox import Outbox
from aftd.secrets.chain import SecretChain
from aftd.secrets.config import SecretsConfig
from aftd.secrets.env import EnvProvider
from tests.fixtures.receiver import Receiver

BASE = "https://aftd.example:44399"


def _rule(**kw: Any) -> NotifyConfig:
    return NotifyConfig(**{"name": "n", "url": "http://127.0.0.1:9/x",
                           "events": ("job.failed",), **kw})


def _job(status: JobState = JobState.FAILED, script: str = "hello",
         job_id: str = "job-1") -> Job:
    now = time.time()
    return Job(id=job_id, script_id=script, params={}, status=status, created_at=now - 5,
               started_at=now - 4, finished_at=now, exit_code=1, error="it broke",
               progress=Progress(files_done=2, bytes_done=3 * 1024 * 1024))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteNotifyStore]:
    s = SqliteNotifyStore(tmp_path / "aftd.sqlite")
    await s.open()
    yield s
    await s.close()


@pytest.fixture
async def secrets() -> AsyncIterator[SecretChain]:
    env = {"AFTD_SECRET_SIGN": "k3y-for-signing", "AFTD_SECRET_HOOK_URL": "not a url at all",
           "AFTD_SECRET_GOOD_URL": "http://127.0.0.1:9/hook"}
    chain = SecretChain(SecretsConfig(order=("env",), cache_ttl_s=0.0),
                        providers=[EnvProvider(env)])
    yield chain
    await chain.aclose()


# -- config ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("toml", "error"), [
    ('name = "a"\nevents = ["job.failed"]', "notify[0].url: set exactly one of url and url_secret"),
    ('name = "a"\nurl = "ftp://x/y"\nevents = ["job.failed"]',
     "notify[0].url: must be an http:// or https:// URL with a host, got 'ftp://x/y'"),
    ('name = "a"\nurl = "http://x/"\nevents = ["job.boom"]', "notify[0].events[0]: must be one "
     "of job.failed, job.succeeded, job.cancelled, job.interrupted, report.abandoned, "
     "trigger.error; got 'job.boom'"),
    ('name = "a"\nurl = "http://x/"\nevents = []', "notify[0].events: must not be empty"),
    ('name = "a"\nurl = "http://x/"\nevents = ["job.failed"]\nformat = "teams"',
     "notify[0].format: must be one of json, slack; got 'teams'"),
    ('name = "a"\nurl = "http://x/"\nevents = ["job.failed"]\nhmac_secret = "../k"',
     "notify[0].hmac_secret: invalid secret name '../k'"),
    ('name = "a b"\nurl = "http://x/"\nevents = ["job.failed"]', "notify[0].name: must be"),
    ('name = "a"\nurl = "http://x/"\nevents = ["job.failed"]\n[[notify]]\nname = "a"\n'
     'url = "http://x/"\nevents = ["job.failed"]', "notify[1].name: duplicate notification "
     "name 'a'"),
])
def test_config_errors_name_the_key(toml: str, error: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(tomllib.loads("[[notify]]\n" + toml), "aftd.toml", base=Path("."))
    assert str(exc.value).startswith(f"aftd.toml: {error}"), str(exc.value)


def test_public_url_is_checked_and_defaults_to_listen() -> None:
    cfg = parse_config({"server": {"listen": "127.0.0.1:5000"}}, "f", base=Path("."))
    assert cfg.server.base_url == "https://127.0.0.1:5000"
    cfg = parse_config({"server": {"public_url": "https://h.example:1/"}}, "f", base=Path("."))
    assert cfg.server.base_url == "https://h.example:1"
    with pytest.raises(ConfigError, match=r"server\.public_url: must be an http"):
        parse_config({"server": {"public_url": "h.example"}}, "f", base=Path("."))


# -- bodies ------------------------------------------------------------------------------------

def test_slack_text_escapes_and_links() -> None:
    text = slack_text({"event": "job.failed", "jobId": "abcdef123456", "scriptId": "a<b>",
                       "status": "failed", "durationS": 1.25, "bytes": 3 << 20, "files": 2,
                       "url": f"{BASE}/ui/jobs/abcdef123456?x=1&y=2",
                       "error": "line 1 & <2>\nline 2"})
    assert text == (f":x: Job <{BASE}/ui/jobs/abcdef123456?x=1&amp;y=2|abcdef12> of `a&lt;b&gt;` "
                    "failed after 1.2 s (3.0 MiB, 2 files)\n> line 1 &amp; &lt;2&gt;\n> line 2")
    assert human_bytes(0) == "0 B" and human_bytes(1536) == "1.5 KiB"


def test_idempotency_keys_are_stable_and_distinct() -> None:
    assert idempotency_key("a", "job.failed", "j") == idempotency_key("a", "job.failed", "j")
    assert len({idempotency_key(n, e, s) for n in "ab" for e in ("job.failed", "job.succeeded")
                for s in ("j1", "j2")}) == 8


# -- the service and its store ----------------------------------------------------------------

async def test_jobs_events_match_rules_and_settle_intents(store: SqliteNotifyStore) -> None:
    rules = [_rule(name="all", events=("job.failed", "job.succeeded")),
             _rule(name="claims", scripts=("claim-*",)), _rule(name="slack", format="slack")]
    n = Notifications(store, rules, BASE)
    await n.job_started(_job(script="other"))  # "all" wants it
    assert await store.intents() == ["job-1"]
    await n.job_ended(_job(script="other"))
    assert await store.intents() == []
    rows = await store.due(time.time() + 1, 10)
    assert sorted(r.notify for r in rows) == ["all", "slack"]
    body = json.loads(next(r.body for r in rows if r.notify == "all"))
    assert body["event"] == "job.failed" and body["url"] == f"{BASE}/ui/jobs/job-1"
    assert (body["bytes"], body["files"], body["durationS"]) == (3 << 20, 2, 4.0)
    assert set(json.loads(next(r.body for r in rows if r.notify == "slack"))) == {"text"}
    # The same end again (a repeated recovery) queues nothing new.
    await n.job_ended(_job(script="other"))
    assert len(await store.due(time.time() + 1, 10)) == 2


async def test_no_intent_without_a_rule_for_the_script(store: SqliteNotifyStore) -> None:
    n = Notifications(store, [_rule(scripts=("claim-*",))], BASE)
    await n.job_started(_job(script="hello"))
    assert await store.intents() == []
    await n.job_started(_job(script="claim-x"))
    assert await store.intents() == ["job-1"]


async def test_reconcile_announces_jobs_whose_end_was_not(store: SqliteNotifyStore) -> None:
    """The crash window: the job's final state is stored, its notification is not."""
    n = Notifications(store, [_rule(events=("job.succeeded", "job.failed"))], BASE)
    jobs = {"done": _job(JobState.SUCCEEDED, job_id="done"),
            "queued": _job(JobState.QUEUED, job_id="queued"),
            # its event is no longer wanted (the config changed across the restart)
            "unwanted": _job(JobState.CANCELLED, job_id="unwanted")}
    for job_id in ("done", "queued", "gone", "unwanted"):
        await store.add_intent(job_id, time.time())
    await n.load()

    async def lookup(job_id: str) -> Job | None:
        return jobs.get(job_id)

    assert await n.reconcile(lookup) == 2
    assert await store.intents() == ["queued"]
    [row] = await store.due(time.time() + 1, 10)
    assert (row.event, row.job_id) == ("job.succeeded", "done")
    assert await n.reconcile(lookup) == 0  # settled once
    assert len(await store.due(time.time() + 1, 10)) == 1


async def test_emit_is_idempotent_per_key_and_filtered(store: SqliteNotifyStore) -> None:
    woken: list[int] = []
    n = Notifications(store, [_rule(events=("trigger.error",), scripts=("hello",))], BASE,
                      wake=lambda: woken.append(1))
    notify.install(n)
    try:
        payload = {"trigger": "t", "scriptId": "hello", "error": "x"}
        assert await notify.emit("trigger.error", payload, key="t-1") == 1
        assert await notify.emit("trigger.error", payload, key="t-1") == 0
        assert await notify.emit("trigger.error", {**payload, "scriptId": "other"}) == 0
        assert await notify.emit("trigger.error", payload) == 1  # no key: a new event
        with pytest.raises(ValueError, match=r"unknown notification event 'job\.exploded'"):
            await notify.emit("job.exploded", payload)
    finally:
        notify.install(None)
    assert await notify.emit("trigger.error", {"scriptId": "hello"}) == 0  # nothing installed
    assert woken == [1, 1]


async def test_store_survives_reopen(tmp_path: Path) -> None:
    s = SqliteNotifyStore(tmp_path / "db.sqlite")
    await s.open()
    n = Notifications(s, [_rule()], BASE)
    await n.job_ended(_job())
    assert s.pending_count() == 1
    await s.close()
    s2 = SqliteNotifyStore(tmp_path / "db.sqlite")
    await s2.open()
    try:
        assert s2.pending_count() == 1
        [row] = await s2.due(time.time() + 1, 10)
        await s2.finish(row.id, "delivered", 1, 200, None, time.time())
        assert s2.pending_count() == 0
        assert await s2.prune(time.time() + 1) == 1
    finally:
        await s2.close()


# -- the channel -------------------------------------------------------------------------------

async def test_request_signs_the_stored_body(store: SqliteNotifyStore,
                                             secrets: SecretChain) -> None:
    n = Notifications(store, [_rule(hmac_secret="sign")], BASE)
    await n.job_ended(_job())
    [row] = await store.due(time.time() + 1, 10)
    req = await NotifyChannel(store).request(row, secrets)
    assert req.body == row.body.encode()
    expected = hmac.new(b"k3y-for-signing", req.body, hashlib.sha256).hexdigest()
    assert req.headers["X-Aftd-Signature"] == f"sha256={expected}" == sign("k3y-for-signing",
                                                                           req.body)
    assert req.headers["Idempotency-Key"] == row.idempotency_key


@pytest.mark.parametrize(("rule", "message", "permanent"), [
    ({"hmac_secret": "absent"}, "hmac_secret 'absent': ", True),
    ({"url": "", "url_secret": "absent"}, "url_secret 'absent': ", True),
    ({"url": "", "url_secret": "hook-url"}, "url_secret 'hook-url' must be an http:// or "
     "https:// URL with a host", True),
])
async def test_request_problems_name_the_setting(store: SqliteNotifyStore,
                                                 secrets: SecretChain, rule: dict[str, str],
                                                 message: str, permanent: bool) -> None:
    n = Notifications(store, [_rule(**rule)], BASE)
    await n.job_ended(_job())
    [row] = await store.due(time.time() + 1, 10)
    with pytest.raises(PreparationError) as exc:
        await NotifyChannel(store).request(row, secrets)
    assert str(exc.value).startswith(message) and exc.value.permanent is permanent
    assert "not a url at all" not in str(exc.value)


async def test_a_missing_secret_fails_only_its_notification(tmp_path: Path, store: Any,
                                                            secrets: SecretChain) -> None:
    """Through the outbox's loop: the signed one with a missing key is abandoned after one
    attempt, the others are delivered."""
    r = Receiver()
    await r.start()
    box = Outbox(tmp_path / "aftd.sqlite", ReportsConfig(initial_backoff_s=0.05), secrets)
    outcomes: list[tuple[str, str]] = []
    box.add_channel(NotifyChannel(store, on_outcome=lambda n, o: outcomes.append((n, o))))
    await box.start()
    try:
        n = Notifications(store, [_rule(name="ok", url=f"{r.url}/ok", hmac_secret="sign"),
                                  _rule(name="bad", url=f"{r.url}/bad", hmac_secret="absent"),
                                  _rule(name="plain", url=f"{r.url}/plain")], BASE,
                          wake=box.wake)
        await n.job_ended(_job())
        await r.wait(lambda: len(outcomes) == 3)
        assert sorted(outcomes) == [("bad", "abandoned"), ("ok", "delivered"),
                                    ("plain", "delivered")]
        assert sorted(h.path for h in r.hits) == ["/ok", "/plain"]
        [ok] = r.accepted("/ok")
        assert ok.signed_with("k3y-for-signing")
        rows = [await store.get(i) for i in (1, 2, 3)]
        bad = next(row for row in rows if row is not None and row.notify == "bad")
        assert bad.state == "abandoned" and bad.attempts == 1
        assert bad.last_error is not None and bad.last_error.startswith("hmac_secret 'absent'")
    finally:
        await box.aclose(flush_timeout_s=0)
        await r.stop()
