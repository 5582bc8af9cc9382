"""Pushed notifications from the real daemon to a real HTTP receiver: every event arrives once
per Idempotency-Key (also across a ``kill -9`` between a job's end and the delivery), signed
bodies verify, the Slack format is Slack's, and a missing signing secret fails only the
notification that needs it."""

from __future__ import annotations

import asyncio
import textwrap
import time
from typing import Any

from tests.conftest import HELLO
from tests.fixtures.daemon import Api, DaemonProcess
from tests.fixtures.receiver import Receiver

SIGNING_KEY = "the-notify-signing-key-1234"
PUBLIC = "https://console.example:8443"
ALL_EVENTS = '["job.failed", "job.succeeded", "job.cancelled", "job.interrupted", ' \
             '"report.abandoned", "trigger.error"]'
QUIET = "async def main(job):\n    return 0\n"
# A report the orchestrator (here: the receiver's /orch, which refuses it) never takes.
REPORTER = """
async def main(job):
    rid = await job.outbox.record_intent(
        job.id, url=job.params["url"], token_secret=None,
        failure_body={"status": "failed"}, idempotency_key="k-" + job.id)
    await job.outbox.submit(rid, {"status": "completed"})
"""
# What the triggers feature does when a schedule fails: the same key twice is one event.
TRIGGER_ERROR = """
from aftd import notify

async def main(job):
    for _ in range(2):
        await notify.emit("trigger.error", {"trigger": "nightly", "scriptId": "hello",
                                            "error": "<b>cron</b> & friends"}, key="nightly-7")
"""
SCRIPTS = {"hello": HELLO, "quiet": QUIET, "reporter": REPORTER, "trigger_error": TRIGGER_ERROR}
ENV = {"AFTD_SECRET_NOTIFY_SIGNING_KEY": SIGNING_KEY}


def _config(r: Receiver, backoff: float = 0.2) -> str:
    return textwrap.dedent(f"""
        [reports]
        initial_backoff_s = {backoff}
        max_backoff_s = {max(backoff, 1)}
        [[notify]]
        name = "signed-json"
        url = "{r.url}/json"
        events = {ALL_EVENTS}
        hmac_secret = "notify-signing-key"
        [[notify]]
        name = "chat"
        url = "{r.url}/slack"
        events = ["job.failed", "trigger.error"]
        scripts = ["hel*"]
        format = "slack"
        [[notify]]
        name = "missing-key"
        url = "{r.url}/bad"
        events = ["job.succeeded", "job.failed"]
        hmac_secret = "no-such-secret"
    """)


async def _daemon(make_daemon: Any, r: Receiver, **kw: Any) -> DaemonProcess:
    d: DaemonProcess = await make_daemon(
        scripts=SCRIPTS, env=ENV, extra_config=_config(r, **kw),
        server_config=f'public_url = "{PUBLIC}"')
    return d


async def _run(api: Api, script: str, params: Any = None) -> dict[str, Any]:
    status, job = await api.trigger(script, params)
    assert status == 201, job
    return await api.wait_job(job["jobId"])


def _by_job(r: Receiver, path: str) -> dict[str, Any]:
    return {h.json().get("jobId"): h for h in r.accepted(path)}


async def test_job_events_arrive_signed_once_each(make_daemon: Any, receiver: Receiver) -> None:
    d = await _daemon(make_daemon, receiver)
    api = Api(d)
    try:
        ok = await _run(api, "hello", {"name": "ops"})
        failed = await _run(api, "hello", {"exit_code": 3})
        quiet = await _run(api, "quiet")
        _, slow = await api.trigger("hello", {"sleep": 30})
        await api.wait_job(slow["jobId"], ("running",))
        await api.request("POST", f"/v1/jobs/{slow['jobId']}/cancel")
        await receiver.wait(lambda: len(receiver.accepted("/json")) == 4)
        hits = _by_job(receiver, "/json")
        assert {j: h.json()["event"] for j, h in hits.items()} == {
            ok["jobId"]: "job.succeeded", failed["jobId"]: "job.failed",
            quiet["jobId"]: "job.succeeded", slow["jobId"]: "job.cancelled"}
        for hit in hits.values():
            assert hit.signed_with(SIGNING_KEY), hit.headers
            assert not hit.signed_with(SIGNING_KEY + "x")
            assert hit.headers["X-Aftd-Event"] == hit.json()["event"]
        body = hits[failed["jobId"]].json()
        assert body["notification"] == "signed-json" and body["scriptId"] == "hello"
        assert body["trigger"] is None  # started through the API
        assert (body["status"], body["exitCode"]) == ("failed", 3)
        assert body["url"] == f"{PUBLIC}/ui/jobs/{failed['jobId']}"
        assert body["error"] == failed["error"]
        assert isinstance(body["durationS"], float) and body["bytes"] == 0
        assert body["occurredAt"].endswith("Z") and body["finishedAt"] == failed["finishedAt"]
        # Slack: only hello's failure (its scripts glob), as Slack's {"text": ...}.
        [chat] = receiver.accepted("/slack")
        assert set(chat.json()) == {"text"} and "X-Aftd-Signature" not in chat.headers
        text = chat.json()["text"]
        assert text.startswith(":x: Job <") and "|" in text and "`hello` failed" in text
        assert f"<{PUBLIC}/ui/jobs/{failed['jobId']}|{failed['jobId'][:8]}>" in text
        # The entry whose signing secret does not exist: given up, nothing sent, nothing else
        # affected (the jobs ended as they would have).
        await d.wait_for_log('"notification_abandoned"')
        assert [h for h in receiver.hits if h.path == "/bad"] == []
        assert "hmac_secret 'no-such-secret'" in d.logs()
        assert (ok["status"], quiet["status"]) == ("succeeded", "succeeded")
        assert SIGNING_KEY not in d.logs()
        await _more_events(api, d, receiver)
        assert all(n == 1 for n in receiver.deliveries_per_key("/json").values())
    finally:
        await api.close()


async def _more_events(api: Api, d: DaemonProcess, receiver: Receiver) -> None:
    """trigger.error through aftd.notify.emit (one event for one key), report.abandoned."""
    await _run(api, "trigger_error")
    receiver.fail("/orch", 400)
    reporter = await _run(api, "reporter", {"url": f"{receiver.url}/orch"})

    def arrived(event: str) -> list[Any]:
        return [h for h in receiver.accepted("/json") if h.json()["event"] == event]

    await receiver.wait(lambda: arrived("trigger.error") and arrived("report.abandoned"))
    [trig] = arrived("trigger.error")
    assert trig.json()["trigger"] == "nightly" and trig.signed_with(SIGNING_KEY)
    [chat] = [h for h in receiver.accepted("/slack") if "Trigger" in h.json()["text"]]
    assert "`nightly` failed" in chat.json()["text"]
    assert "&lt;b&gt;cron&lt;/b&gt; &amp; friends" in chat.json()["text"]
    [abandoned] = arrived("report.abandoned")
    body = abandoned.json()
    assert (body["jobId"], body["scriptId"], body["attempts"]) == (reporter["jobId"],
                                                                   "reporter", 1)
    assert body["url"].endswith(f"/ui/jobs/{reporter['jobId']}") and "HTTP 400" in body["error"]
    assert (body["status"], body["jobError"]) == ("succeeded", None)
    assert isinstance(body["durationS"], float) and body["bytes"] == 0
    time_limit = time.monotonic() + 2  # a second emit with the same key adds nothing
    while time.monotonic() < time_limit:
        assert len(arrived("trigger.error")) == 1
        await asyncio.sleep(0.1)


async def test_delivered_once_per_key_across_kill_9(make_daemon: Any,
                                                    receiver: Receiver) -> None:
    """The receiver is down when the jobs end; the daemon is killed with a delivery owed and a
    job running; after the restart every event arrives, once per Idempotency-Key."""
    d = await _daemon(make_daemon, receiver)
    api = Api(d)
    try:
        await receiver.stop()  # connections refused: the notifications stay pending
        done = await _run(api, "hello", {"exit_code": 2})
        _, running = await api.trigger("hello", {"sleep": 60})
        await api.wait_job(running["jobId"], ("running",))
        await d.wait_for_log('"notification_retry_scheduled"', timeout=30)
        d.kill9()
        await receiver.start()  # same port
        await d.start()
        await receiver.wait(lambda: len(receiver.accepted("/json")) == 2, timeout=90)
        hits = _by_job(receiver, "/json")
        assert hits[done["jobId"]].json()["event"] == "job.failed"
        assert hits[running["jobId"]].json()["event"] == "job.interrupted"
        await receiver.wait(lambda: len(receiver.accepted("/slack")) == 1)
        time_limit = time.monotonic() + 3  # nothing arrives twice, even late
        while time.monotonic() < time_limit:
            assert set(receiver.deliveries_per_key("/json").values()) == {1}
            assert set(receiver.deliveries_per_key("/slack").values()) == {1}
            await asyncio.sleep(0.1)
        for hit in hits.values():
            assert hit.signed_with(SIGNING_KEY)
    finally:
        await api.close()


async def test_a_failing_trigger_is_announced_once_per_error(make_daemon: Any, receiver: Receiver,
                                                            tmp_path: Any) -> None:
    """A real watch on a directory that is not there: one trigger.error for the error, not one
    per poll; the trigger and its script are named, and the slack entry filters by script."""
    root = tmp_path / "root"
    root.mkdir()
    config = textwrap.dedent(f"""
        [vfs.root]
        type = "local"
        root = "{root}"
        [[triggers]]
        name = "inbox"
        type = "watch"
        vfs = "root"
        path = "incoming"
        script = "quiet"
        poll_s = 0.2
        stable_s = 1
        [[notify]]
        name = "errors"
        url = "{receiver.url}/json"
        events = ["trigger.error"]
        [[notify]]
        name = "chat"
        url = "{receiver.url}/slack"
        events = ["trigger.error"]
        scripts = ["hel*"]
        format = "slack"
    """)
    d: DaemonProcess = await make_daemon(scripts={"quiet": QUIET}, extra_config=config)
    api = Api(d)
    try:
        await receiver.wait(lambda: len(receiver.accepted("/json")) == 1)
        [hit] = receiver.accepted("/json")
        body = hit.json()
        assert (body["event"], body["trigger"], body["scriptId"]) == ("trigger.error", "inbox",
                                                                      "quiet")
        assert "incoming" in body["error"] and hit.key
        # Many more polls fail the same way: still one notification.
        status, st = await api.request("GET", "/v1/triggers/inbox")
        assert status == 200 and st["state"] == "error"
        await d.wait_for_log('"trigger_failed"')
        time_limit = time.monotonic() + 2
        while time.monotonic() < time_limit:
            assert len(receiver.accepted("/json")) == 1
            await asyncio.sleep(0.1)
        assert receiver.accepted("/slack") == []  # "quiet" is not a hel* script
    finally:
        await api.close()
