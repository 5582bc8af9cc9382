"""Every route of the live daemon answers as ``/v1/openapi.json`` says.

One daemon (its own: the test drains it at the end) is called on every route, for every status
the document lists where a daemon can be brought to answer it; each response's status must be
documented for its route and its body must validate against the documented schema (JSON Schema
2020-12, the dialect of OpenAPI 3.1), NDJSON line by line. The last check is that every
documented status was seen, apart from the few listed in ``UNREACHABLE``.
"""

from __future__ import annotations

import hashlib
import json
import signal
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from tests.api.conftest import REPORTER, spawn
from tests.api.rawclient import KEY, parse, read_all, request_bytes, tls
from tests.conftest import HELLO
from tests.fixtures.daemon import API_KEY_SHA256, DaemonProcess

# Metrics, the throughput ring and the console are always there in a daemon started with its
# defaults; these 404s are for an app built without them (tests/console covers a disabled
# console's answers).
UNREACHABLE = {("get", "/metrics", 404), ("get", "/v1/stats/throughput", 404),
               ("post", "/v1/session", 404)}

SLOW = """
import asyncio
async def main(job):
    await asyncio.sleep(float(job.params.get("seconds", 60)))
"""
# A report intent that stays one while the job runs: a retry of it is refused (409).
INTENDER = """
import asyncio
async def main(job):
    await job.outbox.record_intent(
        job.id, url="http://127.0.0.1:9/report", token_secret=None,
        failure_body={"status": "failed"}, idempotency_key="i-" + job.id)
    await asyncio.sleep(60)
"""
ELSEWHERE_KEY = b"the-key-of-elsewhere"
KEYS = textwrap.dedent(f"""
    [[auth.api_keys]]
    name = "test"
    sha256 = "{API_KEY_SHA256}"
    allow_from = ["127.0.0.1/32", "::1/128"]
    [[auth.api_keys]]
    name = "elsewhere"
    sha256 = "{hashlib.sha256(ELSEWHERE_KEY).hexdigest()}"
    allow_from = ["10.0.0.0/8"]
""")
FAILS = """
async def main(job):
    return 1
"""
# Two jobs at a time and no queue: a third trigger meets a full daemon (503). A schedule that
# runs when asked, and a watch whose file's job fails (so it can be retried).
CONFIG = "[jobs]\nmax_concurrent = 2\nmax_queued = 0\n" + textwrap.dedent("""
    [vfs.drop]
    type = "local"
    root = "{drop}"
    [[triggers]]
    name = "sched"
    type = "schedule"
    every_s = 86400
    script = "slow"
    params = {{ seconds = 2 }}
    [[triggers]]
    name = "inbox"
    type = "watch"
    vfs = "drop"
    script = "fails"
    stable_s = 0
    poll_s = 0.5
""")


@dataclass
class Call:
    method: str
    path: str
    status: int
    headers: dict[str, str]
    raw: bytes

    def json(self) -> Any:
        return json.loads(self.raw)


def _dechunk(raw: bytes) -> bytes:
    """The body of a ``Transfer-Encoding: chunked`` response (a streamed log)."""
    out = b""
    while raw:
        size, _, rest = raw.partition(b"\r\n")
        n = int(size.split(b";")[0], 16)
        if n == 0:
            break
        out, raw = out + rest[:n], rest[n + 2:]
    return out


@dataclass
class Checker:
    """Sends requests and checks each answer against the document."""

    daemon: DaemonProcess
    doc: dict[str, Any]
    seen: set[tuple[str, str, int]] = field(default_factory=set)

    def send(self, method: str, path: str, template: str, body: Any = None,
             headers: list[tuple[bytes, bytes]] | None = None, key: bytes | None = KEY,
             raw: bytes | None = None) -> Call:
        hdrs = ([(b"X-API-Key", key)] if key else []) + (headers or [])
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        with tls(self.daemon, timeout=60) as s:
            s.sendall(raw if raw is not None else request_bytes(method, path, hdrs, data))
            status, resp_headers, payload = parse(read_all(s, 60))
        if resp_headers.get("transfer-encoding") == "chunked":
            payload = _dechunk(payload)
        call = Call(method, path, status, resp_headers, payload)
        self.check(call, template)
        return call

    def check(self, call: Call, template: str) -> None:
        op = self.doc["paths"][template][call.method.lower()]
        documented = op["responses"].get(str(call.status))
        assert documented is not None, (call.method, template, call.status, call.raw[:500])
        documented = self._deref(documented)
        media = call.headers.get("content-type", "").split(";")[0]
        assert media in documented["content"], (template, call.status, media)
        validator = self._validator(documented["content"][media]["schema"])
        docs = ([json.loads(line) for line in call.raw.splitlines() if line.strip()]
                if media == "application/x-ndjson" else
                [call.raw.decode()] if media == "text/plain" else [call.json()])
        for item in docs:
            errors = sorted(validator.iter_errors(item), key=str)
            assert not errors, (template, call.status, errors[0].message, item)
        for name, spec in documented.get("headers", {}).items():
            assert not spec.get("required") or name.lower() in call.headers, (template, name)
        self.seen.add((call.method.lower(), template, call.status))

    def _deref(self, item: dict[str, Any]) -> dict[str, Any]:
        ref = item.get("$ref")
        if ref is None:
            return item
        node: Any = self.doc
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        return dict(node)

    def _validator(self, schema: dict[str, Any]) -> Draft202012Validator:
        # The document's components travel with the schema, so "#/components/..." resolves.
        return Draft202012Validator({**schema, "components": self.doc["components"]},
                                    format_checker=Draft202012Validator.FORMAT_CHECKER)

    def documented(self) -> set[tuple[str, str, int]]:
        return {(method, path, int(status)) for path, ops in self.doc["paths"].items()
                for method, op in ops.items() for status in op["responses"]}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    drop = tmp_path_factory.mktemp("drop")
    (drop / "a.csv").write_text("a")
    d = spawn(tmp_path_factory.mktemp("live"), api_keys=KEYS,
              extra_config=CONFIG.format(drop=drop),
              scripts={"hello": HELLO, "slow": SLOW, "reporter": REPORTER,
                       "intender": INTENDER, "fails": FAILS},
              server_config="body_timeout_s = 2\nmax_body_bytes = 65536\n"
                            "max_params_bytes = 4096\n")
    yield d
    d.stop()


def _wait(c: Checker, job_id: str, done: tuple[str, ...] = ("succeeded", "failed")) -> Any:
    deadline = time.monotonic() + 60
    while True:
        job = c.send("GET", f"/v1/jobs/{job_id}", "/v1/jobs/{jobId}").json()
        if job["status"] in done and ("report" not in job or job["report"] is None
                                      or job["report"]["attempts"]):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.1)


def _every_route_refuses(c: Checker) -> None:
    """400 (a header that is not UTF-8), 401 (no key) and 403 (a key from elsewhere) on every
    route that the document says answers them."""
    for template, ops in c.doc["paths"].items():
        path = (template.replace("{jobId}", "no-such-job").replace("{reportId}", "0")
                .replace("{name}", "no-such-trigger"))
        for method, op in ops.items():
            body = b"{}" if method == "post" else None
            c.send(method.upper(), path, template, body, [(b"X-Odd", b"\xff\xfe")])
            if op.get("security") != []:
                c.send(method.upper(), path, template, body, key=None)
                c.send(method.upper(), path, template, body, key=ELSEWHERE_KEY)


def _triggers(c: Checker) -> str:
    idem = [(b"Idempotency-Key", b"live-1")]
    first = c.send("POST", "/v1/jobs", "/v1/jobs", {"scriptId": "hello"}, idem)
    assert first.status == 201 and first.headers["location"].endswith(first.json()["jobId"])
    assert c.send("POST", "/v1/jobs", "/v1/jobs", {"scriptId": "hello"}, idem).status == 200
    assert c.send("POST", "/v1/jobs", "/v1/jobs", {"scriptId": "hello", "params": {"a": 1}},
                  idem).status == 409
    assert c.send("POST", "/v1/jobs", "/v1/jobs", {"scriptId": "nope"}).status == 404
    assert c.send("POST", "/v1/jobs", "/v1/jobs", {"scriptName": "hello",
                                                   "params": {"a": "x" * 5000}}).status == 413
    for template, path in (("/v1/jobs", "/v1/jobs"),
                           ("/v1/jobs/{jobId}/cancel", "/v1/jobs/x/cancel"),
                           ("/v1/reports/{reportId}/retry", "/v1/reports/1/retry")):
        assert c.send("POST", path, template, b"{" + b" " * 70_000 + b"}").status == 413
        slow = request_bytes("POST", path, [(b"X-API-Key", KEY), (b"Content-Length", b"100")])
        assert c.send("POST", path, template, raw=slow + b'{"scri').status == 408
    job_id: str = first.json()["jobId"]
    return job_id


def _reads(c: Checker, job_id: str) -> None:
    _wait(c, job_id)
    reporter = c.send("POST", "/v1/jobs", "/v1/jobs", {"scriptId": "reporter"}).json()
    assert _wait(c, reporter["jobId"])["report"]["state"] == "pending"
    for path in ("/livez", "/v1/health", "/v1/scripts", "/metrics", "/v1/openapi.json",
                 "/v1/me", "/v1/stats/throughput"):
        assert c.send("GET", path, path).status == 200
    for query in ("", "?params=true", "?status=succeeded,failed&limit=1",
                  f"?limit=1&cursor={10**17}&script=hello", "?limit=abc", "?bogus=1"):
        c.send("GET", f"/v1/jobs{query}", "/v1/jobs")
    for query in ("", "?after=1", "?follow=true", "?after=-1"):
        c.send("GET", f"/v1/jobs/{job_id}/log{query}", "/v1/jobs/{jobId}/log")
    for template in ("/v1/jobs/{jobId}", "/v1/jobs/{jobId}/log"):
        assert c.send("GET", template.replace("{jobId}", "nope"), template).status == 404
    assert c.send("POST", "/v1/jobs/nope/cancel", "/v1/jobs/{jobId}/cancel").status == 404
    assert c.send("POST", "/v1/jobs", "/v1/jobs", b"[1]").status == 400


def _reports(c: Checker) -> None:
    """The outbox's reports listed and retried: a pending one (200), unknown ids (404), an
    intent (409)."""
    listed = c.send("GET", "/v1/reports", "/v1/reports").json()["reports"]
    assert listed and listed[0]["state"] == "pending", listed
    for query in ("?state=pending", "?state=abandoned,pending&limit=1", "?cursor=1",
                  "?state=bogus", "?limit=0"):
        c.send("GET", f"/v1/reports{query}", "/v1/reports")
    template = "/v1/reports/{reportId}/retry"
    retried = c.send("POST", f"/v1/reports/{listed[0]['reportId']}/retry", template)
    assert (retried.status, retried.json()["state"]) == (200, "pending"), retried.raw
    for bad in ("999999", "x1"):
        assert c.send("POST", f"/v1/reports/{bad}/retry", template).status == 404
    job = c.send("POST", "/v1/jobs", "/v1/jobs", {"scriptId": "intender"}).json()
    deadline = time.monotonic() + 60
    while not (job := c.send("GET", f"/v1/jobs/{job['jobId']}", "/v1/jobs/{jobId}").json()
               ).get("report"):
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    assert job["report"]["state"] == "intent"
    refused = c.send("POST", f"/v1/reports/{job['report']['reportId']}/retry", template)
    assert (refused.status, refused.json()["error"]["code"]) == (409, "report_not_retryable")
    c.send("POST", f"/v1/jobs/{job['jobId']}/cancel", "/v1/jobs/{jobId}/cancel")
    _wait(c, job["jobId"], ("cancelled",))


def _console_session(c: Checker) -> None:
    """Sign in, read the session with its cookie, sign out (refused without the CSRF token)."""
    signed_in = c.send("POST", "/v1/session", "/v1/session")
    assert signed_in.status == 201
    cookie = [(b"Cookie", signed_in.headers["set-cookie"].split(";")[0].encode())]
    csrf = [(b"X-CSRF-Token", signed_in.json()["csrfToken"].encode())]
    assert c.send("GET", "/v1/session", "/v1/session", headers=cookie, key=None).status == 200
    for method in ("GET", "DELETE"):  # a key without a session cookie has no session
        assert c.send(method, "/v1/session", "/v1/session").status == 404
    refused = c.send("DELETE", "/v1/session", "/v1/session", headers=cookie, key=None)
    assert (refused.status, refused.json()["error"]["code"]) == (403, "csrf_failed")
    out = c.send("DELETE", "/v1/session", "/v1/session", headers=cookie + csrf, key=None)
    assert out.status == 200 and "Max-Age=0" in out.headers["set-cookie"]
    assert c.send("GET", "/v1/session", "/v1/session", headers=cookie, key=None).status == 401
    assert c.send("POST", "/v1/session", "/v1/session",
                  b"{" + b" " * 70_000 + b"}").status == 413
    slow = request_bytes("POST", "/v1/session", [(b"X-API-Key", KEY),
                                                 (b"Content-Length", b"100")])
    assert c.send("POST", "/v1/session", "/v1/session", raw=slow + b"{").status == 408


def _cancels_and_full(c: Checker, job_id: str) -> None:
    slow = [c.send("POST", "/v1/jobs", "/v1/jobs", {"scriptId": "slow"}).json()["jobId"]
            for _ in range(2)]
    for j in slow:
        _wait(c, j, ("running",))
    full = c.send("POST", "/v1/jobs", "/v1/jobs", {"scriptId": "hello"})
    assert (full.status, full.json()["error"]["code"]) == (503, "queue_full")
    for j in slow:
        assert c.send("POST", f"/v1/jobs/{j}/cancel", "/v1/jobs/{jobId}/cancel").status == 200
    assert c.send("POST", f"/v1/jobs/{job_id}/cancel", "/v1/jobs/{jobId}/cancel").status == 409
    for j in slow:
        _wait(c, j, ("cancelled",))


def _trigger_routes(c: Checker) -> None:
    """Every /v1/triggers route: found, unknown, and the conflicts of run and retry."""
    t = "/v1/triggers/{name}"
    assert c.send("GET", "/v1/triggers", "/v1/triggers").status == 200
    for name, status in (("sched", 200), ("inbox", 200), ("nope", 404)):
        assert c.send("GET", f"/v1/triggers/{name}", t).status == status
        for action in ("pause", "resume", "run"):
            assert c.send("POST", f"/v1/triggers/{name}/{action}", t + f"/{action}").status \
                == status
    assert c.send("POST", "/v1/triggers/sched/run", t + "/run").status == 409  # overlap skip
    deadline = time.monotonic() + 60
    while not c.send("GET", "/v1/triggers/inbox", t).json()["failedFiles"]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    retry = t + "/retry"
    assert c.send("POST", "/v1/triggers/inbox/retry", retry, {"path": "a.csv"}).status == 200
    for name, body, status in (("inbox", {"path": "b.csv"}, 409), ("sched", {"path": "a"}, 409),
                               ("nope", {"path": "a"}, 404), ("inbox", {}, 400)):
        assert c.send("POST", f"/v1/triggers/{name}/retry", retry, body).status == status
    for action in ("pause", "resume", "run", "retry"):
        path = f"/v1/triggers/inbox/{action}"
        assert c.send("POST", path, f"{t}/{action}", b"{" + b" " * 70_000 + b"}").status == 413
        slow = request_bytes("POST", path, [(b"X-API-Key", KEY), (b"Content-Length", b"100")])
        assert c.send("POST", path, f"{t}/{action}", raw=slow + b'{"pa').status == 408


def _draining(c: Checker) -> None:
    running = c.send("POST", "/v1/jobs", "/v1/jobs", {"scriptId": "slow",
                                                      "params": {"seconds": 5}}).json()
    _wait(c, running["jobId"], ("running",))
    deadline = time.monotonic() + 60
    while not c.send("GET", "/v1/triggers/inbox", "/v1/triggers/{name}").json()["failedFiles"]:
        assert time.monotonic() < deadline  # the retried file failed again
        time.sleep(0.1)
    c.daemon.signal(signal.SIGTERM)
    deadline = time.monotonic() + 30
    while c.send("GET", "/v1/health", "/v1/health").status != 503:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    refused = c.send("POST", "/v1/jobs", "/v1/jobs", {"scriptId": "hello"})
    assert (refused.status, refused.json()["error"]["code"]) == (503, "draining")
    refused = c.send("POST", "/v1/triggers/inbox/retry", "/v1/triggers/{name}/retry",
                     {"path": "a.csv"})
    assert (refused.status, refused.json()["error"]["code"]) == (503, "draining")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_every_route_answers_as_documented(live: DaemonProcess) -> None:
    c = Checker(live, {})
    with tls(live) as s:
        s.sendall(request_bytes("GET", "/v1/openapi.json", [(b"X-API-Key", KEY)]))
        c.doc = json.loads(parse(read_all(s))[2])
    for schema in c.doc["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    _every_route_refuses(c)
    job_id = _triggers(c)
    _reads(c, job_id)
    _reports(c)
    _console_session(c)
    _cancels_and_full(c, job_id)
    _trigger_routes(c)
    _draining(c)
    missing = c.documented() - c.seen - UNREACHABLE
    assert not missing, sorted(missing)
    assert live.proc is not None and live.proc.wait(60) == 0
    assert "Traceback" not in live.logs() and '"request_failed"' not in live.logs()


def test_unreachable_lists_only_documented_statuses() -> None:
    """UNREACHABLE only lists statuses the document does have (it shrinks with the API)."""
    from aftd.api.app import ROUTES
    from aftd.api.openapi import openapi_document

    doc = openapi_document(ROUTES)
    for method, path, status in UNREACHABLE:
        assert str(status) in doc["paths"][path][method]["responses"]
