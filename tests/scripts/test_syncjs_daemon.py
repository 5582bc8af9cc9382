"""SyncJS scripts through the real daemon: the host API, errors with line numbers, limits (cancel
and timeout of a busy loop, memory), secrets masked, paths confined, durable reports.

One daemon serves the module (secrets from a 0600 file, two local VFS, a 16 MiB JavaScript
memory limit); a real aiohttp server answers the HTTP calls and the orchestrator fixture takes
the durable reports.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.fixtures.daemon import Api, DaemonProcess
from tests.fixtures.orchestrator import Orchestrator
from tests.fixtures.procs import free_port
from tests.fixtures.webapp import serving
from tests.scripts.helpers import (
    daemon_events,
    daemon_strings,
    job_log,
    run_job,
    strings,
    wait_event,
    wait_pid_gone,
)

SECRET = 'js-S3cret"value\\with/quote'
ORCH_TOKEN = "orch-token-for-syncjs-0123"
EXAMPLE = (Path(__file__).resolve().parents[2] / "aftd" / "examples" / "scripts"
           / "claim_transfer_report_js.js").read_text()

API = """// Exercise the SyncJS host API, one part per job, chosen by the "what" param.
// @name SyncJS API
var what = Params("what");
var out = {};
if (what === "params") {
    out = [Params("s"), Params("n"), Params("f"), Params("b"), typeof Params("missing")];
} else if (what === "log") {
    Log("plain");
    Log.Debug("debugging");
    Log.Info("info", {a: 1}, [2], null);
    Log.Warn("warned");
    Log.Error("erred");
    console.log("console", 42);
    console.error("console error");
} else if (what === "exit") {
    try {
        Exit(Number(Params("code")));
    } catch (e) {
        Log.Error("caught " + e);
    } finally {
        Log.Error("finally ran");
    }
    Log.Error("after Exit");
} else if (what === "throw") {
    var nothing = null;
    nothing.field = 1; // @line:throw
} else if (what === "unsupported") {
    try {
        SendMail("ops@example.com", "subject"); // @line:unsupported
    } catch (e) {
        Log.Error("caught " + e);
    }
} else if (what === "undefined_fn") {
    NoSuchFunction("x"); // @line:undefined_fn
} else if (what === "sleep") {
    var before = Date.now();
    Sleep(Number(Params("ms")));
    out.slept = Date.now() - before;
} else if (what === "method") {
    HttpCli().Url("http://127.0.0.1:9/").Proxy("x"); // @line:method
} else if (what === "secret") {
    var s = GetSecret("demo-token");
    Log.Info("plain " + s);
    Log.Info(JSON.stringify({token: s}));
    console.log(encodeURIComponent(s));
    throw new Error("failed with " + s);
} else if (what === "missing_secret") {
    GetSecret("no-such-secret"); // @line:missing_secret
} else if (what === "vfs") {
    var src = VirtualFSByName("src"), dst = VirtualFSByName("dst"), p = Params("path");
    var copied = src.CopyToVFS(p, dst, "in");
    out.copy = [copied.Ok(), copied.ErrorMsg()];
    var missing = src.CopyToVFS("missing.bin", dst, "in");
    out.missing = [missing.Ok(), missing.ErrorMsg()];
    var notVfs = src.CopyToVFS(p, "dst", "in");
    out.notVfs = [notVfs.Ok(), notVfs.ErrorMsg()];
    var escape = src.CopyToVFS("../outside.bin", dst, "in");
    out.escapeCopy = [escape.Ok(), escape.ErrorMsg()];
    out.list = dst.ListDir("in");
    out.stat = dst.Stat("in/" + p);
    out.statMissing = dst.Stat("in/none");
    out.mkdir = dst.MakeDir("made/deep").Ok();
    out.rename = dst.Rename("in/" + p, "made/deep/renamed.bin").Ok();
    var badRename = dst.Rename("in/none", "x");
    out.badRename = [badRename.Ok(), badRename.ErrorMsg()];
    out.afterRename = dst.ListDir("made/deep").map(function (e) { return e.name; });
    out.del = dst.DelFile("made/deep/renamed.bin").Ok();
    try { dst.ListDir("../../etc"); } catch (e) { out.escapeList = e.message; }
    try { VirtualFSByName("nowhere"); } catch (e) { out.unknown = e.message; }
} else if (what === "http") {
    var base = Params("url");
    var g = HttpCli().Url(base + "/echo").Bearer(GetSecret("demo-token"))
        .Header("X-Trace", "t-1").Timeout(10).Get();
    out.get = [g.Ok(), g.StatusCode(), JSON.parse(g.BodyAsString()), g.Header("x-reply"),
               g.Header("X-Missing")];
    out.postNull = JSON.parse(HttpCli().Url(base + "/echo").Post(null).BodyAsString());
    out.postObj = JSON.parse(HttpCli().Url(base + "/echo").Post({a: 1}).BodyAsString());
    out.put = JSON.parse(HttpCli().Url(base + "/echo").Header("Content-Type", "text/plain")
        .Put("raw text").BodyAsString());
    var d = HttpCli().Url(base + "/missing").Delete();
    out.del = [d.Ok(), d.StatusCode()];
    var refused = HttpCli().Url(Params("dead")).Get();
    out.refused = [refused.Ok(), refused.StatusCode(), refused.ErrorMsg().length > 0];
    try { HttpCli().Get(); } catch (e) { out.noUrl = e.message; }
    try { HttpCli().Url("ftp://example.com/").Get(); } catch (e) { out.badUrl = e.message; }
} else if (what === "spin") {
    Log.Info("spinning");
    while (true) {}
} else if (what === "memory") {
    var hoard = [];
    while (true) { hoard.push(new Array(100000).fill(Math.random())); }
} else if (what === "durable") {
    var body = JSON.stringify({jobId: Params("job"), status: "completed", agent: "aft"});
    ReportDurably(Params("url") + "/jobs/" + Params("job") + "/report", "orch-token", body);
} else if (what === "intent") {
    var owed = ReportIntent(Params("url") + "/jobs/" + Params("job") + "/report", "orch-token",
                            {jobId: Params("job"), status: "failed", agent: "aft"});
    if (Params("mode") === "throw") { throw new Error("gave up"); }
    if (Params("mode") === "void") { out.voided = owed.Void(); }
} else {
    Exit(99);
}
Log.Info("RESULT " + JSON.stringify(out));
"""

BROKEN = "var fine = 1;\nvar broken = ;\n"


def _line(marker: str) -> int:
    return next(i for i, text in enumerate(API.splitlines(), 1) if f"@line:{marker}" in text)


@pytest.fixture(scope="module")
def js(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    root = tmp_path_factory.mktemp("syncjs")
    for name in ("src", "dst"):
        (root / name).mkdir()
    secrets = root / "secrets.toml"
    secrets.write_text(f"demo-token = {json.dumps(SECRET)}\norch-token = {json.dumps(ORCH_TOKEN)}\n"
                       f"orch-api-token = {json.dumps(ORCH_TOKEN)}\n")
    secrets.chmod(0o600)
    d = DaemonProcess(root / "d", scripts={"api.js": API, "broken.js": BROKEN,
                                           "example.js": EXAMPLE}, extra_config=f"""
[scripts]
kill_grace_s = 10
js_memory_mb = 16
[reports]
initial_backoff_s = 0.2
max_backoff_s = 1.0
[secrets]
order = ["file"]
cache_ttl_s = 0
[secrets.file]
path = "{secrets}"
[vfs.src]
type = "local"
root = "{root / 'src'}"
[vfs.dst]
type = "local"
root = "{root / 'dst'}"
""")
    asyncio.run(d.start())
    yield d
    d.stop()


@pytest.fixture
async def api(js: DaemonProcess) -> AsyncIterator[Api]:
    client = Api(js)
    yield client
    await client.close()


@pytest.fixture
async def orch() -> AsyncIterator[Orchestrator]:
    o = Orchestrator(token=ORCH_TOKEN)
    await o.start()
    yield o
    await o.stop()


async def _result(api: Api, params: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    job = await run_job(api, "api", params)
    for line in await job_log(api, job["jobId"]):
        if str(line["event"]).startswith("RESULT "):
            return job, json.loads(line["event"][len("RESULT "):])
    raise AssertionError(f"no RESULT line: {job}")


def _events(lines: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The script's own log lines, but its RESULT."""
    return [(str(line["level"]), str(line["event"])) for line in lines
            if "source" in line and not str(line["event"]).startswith("RESULT ")]


async def test_listed_with_name_description_and_language(api: Api) -> None:
    status, body = await api.request("GET", "/v1/scripts")
    assert status == 200
    by_id = {s["scriptId"]: s for s in body["scripts"]}
    listed = {k: by_id["api"][k] for k in ("name", "description", "language")}
    assert listed == {"name": "SyncJS API", "language": "syncjs",
                      "description": 'Exercise the SyncJS host API, one part per job, '
                                     'chosen by the "what" param.'}
    assert by_id["example"]["name"] == "claim-transfer-report-js"


async def test_params_as_strings_and_missing_as_undefined(api: Api) -> None:
    job, out = await _result(api, {"what": "params", "s": "abc", "n": 5, "f": 1.5, "b": True})
    assert job["status"] == "succeeded"
    assert out == ["abc", "5", "1.5", "true", "undefined"]


async def test_log_levels_and_console(api: Api) -> None:
    job = await run_job(api, "api", {"what": "log"})
    assert job["status"] == "succeeded", job
    # Debug lines are below the daemon's log level (info), as for Python scripts.
    assert _events(await job_log(api, job["jobId"])) == [
        ("info", "plain"), ("info", 'info {"a":1} [2] null'),
        ("warning", "warned"), ("error", "erred"), ("info", "console 42"),
        ("error", "console error")]


async def test_sleep_waits_at_least_as_long_as_asked(api: Api) -> None:
    job, out = await _result(api, {"what": "sleep", "ms": 300})
    assert job["status"] == "succeeded", job
    assert out["slept"] >= 299  # Date.now() is whole milliseconds


@pytest.mark.parametrize(("code", "status"), [(0, "succeeded"), (3, "failed")])
async def test_exit_ends_the_script_even_inside_try_finally(api: Api, code: int,
                                                            status: str) -> None:
    job = await run_job(api, "api", {"what": "exit", "code": code})
    assert (job["status"], job["exitCode"]) == (status, code), job
    assert _events(await job_log(api, job["jobId"])) == []


async def test_syntax_error_fails_the_job_with_its_line(api: Api) -> None:
    job = await run_job(api, "broken")
    assert (job["status"], job["exitCode"]) == ("failed", None)
    assert job["error"] == ("script 'broken' failed to load: SyntaxError: unexpected token in "
                            "expression: ';' (at line 2, column 14 of broken.js)")
    lines = await job_log(api, job["jobId"])
    assert any(line["event"] == "script_load_failed" for line in lines)


@pytest.mark.parametrize(("what", "expected"), [
    ("throw", "TypeError: cannot set property 'field' of null (at line {line}, "),
    ("missing_secret", "Error: secret 'no-such-secret' not found; tried file"),
    ("unsupported", "SyncJS function SendMail is not supported by aftd (line {line} of api.js)"),
    ("method", "SyncJS function HttpCli.Proxy is not supported by aftd (line {line} of api.js)"),
    ("undefined_fn", "ReferenceError: NoSuchFunction is not defined (at line {line}, "),
])
async def test_errors_fail_the_job_naming_what_and_the_line(api: Api, what: str,
                                                           expected: str) -> None:
    job = await run_job(api, "api", {"what": what})
    assert (job["status"], job["exitCode"]) == ("failed", None), job
    assert job["error"].startswith(expected.format(line=_line(what))), job["error"]
    assert f"line {_line(what)}" in job["error"]
    lines = await job_log(api, job["jobId"])
    # An unsupported function cannot be caught: the script's catch block never ran.
    assert not any(str(line["event"]).startswith("caught") for line in lines)


async def test_secret_values_are_masked_everywhere(api: Api, js: DaemonProcess) -> None:
    job = await run_job(api, "api", {"what": "secret"})
    assert job["status"] == "failed"
    assert job["error"].startswith("Error: failed with *** (at line "), job["error"]
    lines = await job_log(api, job["jobId"])
    assert [e for _, e in _events(lines)] == ["plain ***", '{"token":"***"}', "***"]
    for text in (*strings(job), *strings(lines), *daemon_strings(js)):
        assert SECRET not in text and "S3cret" not in text


async def test_vfs_operations_results_and_confinement(api: Api, js: DaemonProcess) -> None:
    root = js.root.parent
    (root / "src" / "batch.bin").write_bytes(b"x" * 5000)
    (root / "outside.bin").write_bytes(b"secret file")
    job, out = await _result(api, {"what": "vfs", "path": "batch.bin"})
    assert job["status"] == "succeeded", job
    assert out["copy"] == [True, ""]
    assert out["missing"][0] is False and "'missing.bin'" in out["missing"][1]
    assert out["notVfs"][0] is False and "VirtualFSByName" in out["notVfs"][1]
    assert out["escapeCopy"][0] is False and "escapes the VFS root" in out["escapeCopy"][1]
    assert [(e["name"], e["size"], e["isDir"]) for e in out["list"]] == [("batch.bin", 5000,
                                                                          False)]
    assert isinstance(out["list"][0]["mtime"], float)
    assert (out["stat"]["name"], out["stat"]["size"]) == ("batch.bin", 5000)
    assert out["statMissing"] is None
    assert (out["mkdir"], out["rename"], out["del"]) == (True, True, True)
    assert out["badRename"][0] is False and "in/none" in out["badRename"][1]
    assert out["afterRename"] == ["renamed.bin"]
    assert "escapes the VFS root" in out["escapeList"]
    assert "unknown VFS 'nowhere'" in out["unknown"]
    assert not (root / "dst" / "made" / "deep" / "renamed.bin").exists()
    assert (root / "dst" / "made" / "deep").is_dir()
    assert (job["progress"]["filesDone"], job["progress"]["bytesDone"]) == (1, 5000)


async def test_http_builder_and_responses(api: Api) -> None:
    seen: list[dict[str, Any]] = []

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append({"method": request.method, "auth": request.headers.get("Authorization"),
                     "trace": request.headers.get("X-Trace"), "length": len(body)})
        return web.json_response({"method": request.method, "body": body.decode(),
                                  "type": request.headers.get("Content-Type")},
                                 headers={"X-Reply": "yes"})

    app = web.Application()
    app.router.add_route("*", "/echo", echo)
    async with serving(app) as url:
        job, out = await _result(api, {"what": "http", "url": url,
                                       "dead": f"http://127.0.0.1:{free_port()}/"})
    assert job["status"] == "succeeded", job
    assert out["get"] == [True, 200, {"method": "GET", "body": "", "type": None}, "yes", ""]
    assert seen[0] == {"method": "GET", "auth": f"Bearer {SECRET}", "trace": "t-1", "length": 0}
    assert (out["postNull"]["method"], out["postNull"]["body"]) == ("POST", "")
    assert seen[1]["length"] == 0 and seen[1]["auth"] is None  # each HttpCli() starts afresh
    assert (out["postObj"]["body"], out["postObj"]["type"]) == ('{"a":1}', "application/json")
    assert (out["put"]["method"], out["put"]["body"], out["put"]["type"]) == \
        ("PUT", "raw text", "text/plain")
    assert out["del"] == [False, 404]
    assert out["refused"] == [False, 0, True]
    assert out["noUrl"] == "HttpCli.GET: no Url() was given"
    assert "absolute http:// or https:// URL" in out["badUrl"]


async def _spinning(api: Api, body: dict[str, Any]) -> str:
    status, answer = await api.request("POST", "/v1/jobs", json=body)
    assert status == 201, answer
    await wait_event(api, answer["jobId"], "spinning")
    return str(answer["jobId"])


async def _worker_pid(api: Api, job_id: str) -> int:
    return int((await wait_event(api, job_id, "worker_stopping"))["pid"])


async def test_cancel_stops_a_busy_loop(api: Api, js: DaemonProcess) -> None:
    job_id = await _spinning(api, {"scriptId": "api", "params": {"what": "spin"}})
    status, _ = await api.request("GET", "/v1/health")  # the daemon serves meanwhile
    assert status == 200
    status, body = await api.request("POST", f"/v1/jobs/{job_id}/cancel")
    assert status == 200, body
    assert (await api.wait_job(job_id))["status"] == "cancelled"
    pid = await _worker_pid(api, job_id)
    await wait_pid_gone(pid)
    # SIGTERM ended it: the 10 s kill grace never ran out.
    assert not [e for e in daemon_events(js, "worker_killed") if e.get("pid") == pid]


async def test_timeout_stops_a_busy_loop(api: Api) -> None:
    job_id = await _spinning(api, {"scriptId": "api", "params": {"what": "spin"},
                                   "timeoutS": 1})
    job = await api.wait_job(job_id, timeout=60)
    assert (job["status"], job["error"]) == ("failed", "job timed out after 1 s"), job
    await wait_pid_gone(await _worker_pid(api, job_id))


async def test_memory_limit_fails_the_job(api: Api) -> None:
    job = await run_job(api, "api", {"what": "memory"})
    assert job["status"] == "failed", job
    assert "InternalError: out of memory" in job["error"]
    assert "16 MiB ([scripts] js_memory_mb)" in job["error"]


async def test_report_durably_retries_through_the_outbox(api: Api, orch: Orchestrator) -> None:
    orch.add_job("d-1")
    orch.fail_reports(2)
    job = await run_job(api, "api", {"what": "durable", "url": orch.url, "job": "d-1"})
    assert job["status"] == "succeeded", job
    assert await orch.wait_reports("d-1") == [{"jobId": "d-1", "status": "completed",
                                               "agent": "aft"}]
    attempts = orch.report_attempts("d-1")
    assert [a.answered for a in attempts] == [503, 503, 200]
    assert len({a.key for a in attempts}) == 1 and attempts[0].key


@pytest.mark.parametrize("mode", ["throw", "void"])
async def test_report_intent_is_delivered_unless_voided(api: Api, orch: Orchestrator,
                                                        mode: str) -> None:
    orch.add_job(f"i-{mode}")
    job = await run_job(api, "api", {"what": "intent", "url": orch.url, "job": f"i-{mode}",
                                     "mode": mode})
    if mode == "throw":
        assert (job["status"], job["error"].split(" (")[0]) == ("failed", "Error: gave up")
        assert await orch.wait_reports("i-throw") == [{"jobId": "i-throw", "status": "failed",
                                                       "agent": "aft"}]
    else:
        assert job["status"] == "succeeded", job
        assert (await api.job(job["jobId"]))["report"] is None
        assert orch.report_attempts() == []


async def test_bundled_example_claims_copies_and_reports(api: Api, js: DaemonProcess,
                                                         orch: Orchestrator) -> None:
    # The example reads the orchestrator's URL as a secret: give it through the secrets file.
    secrets = js.root.parent / "secrets.toml"
    secrets.write_text(secrets.read_text() + f"orch-api-url = {json.dumps(orch.url)}\n")
    (js.root.parent / "src" / "ex.bin").write_bytes(b"payload")
    orch.add_job("ex-1", {"sourceVfs": "src", "sourcePath": "ex.bin", "destVfs": "dst",
                          "destDir": "example"})
    orch.add_job("ex-2", {"sourceVfs": "src", "sourcePath": "ex.bin", "destVfs": "nowhere",
                          "destDir": "example"})
    ok = await run_job(api, "example", {"job_id": "ex-1"})
    bad = await run_job(api, "example", {"job_id": "ex-2"})
    assert (ok["status"], ok["exitCode"]) == ("succeeded", 0), ok
    assert (js.root.parent / "dst" / "example" / "ex.bin").read_bytes() == b"payload"
    assert bad["status"] == "failed" and "unknown VFS 'nowhere'" in bad["error"], bad
    assert await orch.wait_reports("ex-1") == [{"jobId": "ex-1", "status": "completed",
                                                "agent": "aftd"}]
    assert await orch.wait_reports("ex-2") == [{"jobId": "ex-2", "status": "failed",
                                                "agent": "aftd"}]


@pytest.mark.slow
async def test_a_hundred_jobs_at_once(api: Api, js: DaemonProcess) -> None:
    """Each job sees its own params; the daemon keeps serving (bench/syncjs_bench.py measures
    the rate and memory of such a burst)."""
    triggered = await asyncio.gather(*(api.trigger("api", {"what": "params", "s": f"job-{i}"})
                                       for i in range(100)))
    assert {status for status, _ in triggered} == {201}
    for i, (_, body) in enumerate(triggered):
        job = await api.wait_job(body["jobId"], timeout=180)
        assert job["status"] == "succeeded", job
        lines = await job_log(api, body["jobId"])
        result = next(line["event"] for line in lines if line["event"].startswith("RESULT "))
        assert json.loads(result[len("RESULT "):])[0] == f"job-{i}"
    assert js.proc is not None and js.proc.poll() is None
