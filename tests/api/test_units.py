"""Unit tests of the pieces behind the hostile-input limits: strict JSON, page budgets, the
[server] keys, and the listener's fallback to aiohttp's stock request handler."""

from __future__ import annotations

import asyncio
import io
import json
import math
import ssl
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from aftd import strictjson
from aftd.api import server as api_server
from aftd.api.paging import Page
from aftd.api.responses import JobLog, LogLine
from aftd.api.server import ApiServer
from aftd.config import load_config
from aftd.errors import ConfigError
from aftd.jobs.model import JobState
from aftd.logging import configure_logging, get_logger
from aftd.report.store import _dumps as report_dumps
from aftd.serverconfig import ServerConfig
from aftd.tls import ensure_self_signed, server_context
from tests.fixtures.procs import free_port


@pytest.mark.parametrize(("text", "path", "reason"), [
    ('{"a": NaN}', "a", "NaN"),
    ('{"a": [1, {"b": -Infinity}]}', "a[1].b", "-Infinity"),
    ('{"x y": 1e400}', '["x y"]', "1e400"),
    ("[Infinity]", "[0]", "Infinity"),
    ('{"a": "\\udc80"}', "a", "surrogate"),
    ('{"\\ud800": 1}', "(body)", "surrogate"),
    ("[[[[1]]]]", "[0][0][0]", "nested deeper than 3"),
])
def test_first_problem_names_the_path(text: str, path: str, reason: str) -> None:
    problem = strictjson.first_problem(strictjson.loads(text), max_depth=3)
    assert problem is not None
    assert (problem.path, reason in problem.reason) == (path, True), problem


def test_plain_json_has_no_problem() -> None:
    doc = strictjson.loads('{"a": [1, 2.5, -3e10, "é", true, null, {"b": "\\ud83d\\ude00"}]}')
    assert strictjson.first_problem(doc, max_depth=3) is None
    assert doc["a"][2] == -3e10


def test_deep_input_raises_recursion_error_not_crash() -> None:
    with pytest.raises(RecursionError):
        strictjson.loads("[" * 100_000 + "]" * 100_000)


def test_dumps_never_writes_nan() -> None:
    obj = {"a": math.nan, "b": [math.inf, -math.inf, 1.5], "c": strictjson.NonFinite("NaN")}
    text = strictjson.dumps({k: v for k, v in obj.items() if k != "c"})
    assert json.loads(text, parse_constant=lambda t: pytest.fail(t)) == {
        "a": None, "b": [None, None, 1.5]}
    assert strictjson.finite(obj) == {"a": None, "b": [None, None, 1.5], "c": None}
    assert strictjson.dumps({"b": 1, "a": 2}, sort_keys=True) == '{"a":2,"b":1}'
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular"):
        strictjson.dumps(loop)


def test_log_lines_and_report_bodies_are_strict_json() -> None:
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    try:
        get_logger("t").info("nan_value", ratio=math.nan, items=[math.inf])
    finally:
        configure_logging("info", "json")
    line = json.loads(out.getvalue().splitlines()[-1], parse_constant=lambda t: pytest.fail(t))
    assert line["event"] == "nan_value"  # and no NaN token anywhere on the line
    assert report_dumps({"x": math.nan, "y": 1}) == '{"x":null,"y":1}'


def test_page_stops_before_the_budget_but_keeps_one_row() -> None:
    known = {"job_id": "j" * 128, "status": JobState.INTERRUPTED}
    page = Page(1000, JobLog, "lines", known)
    assert page.add(LogLine(seq=1, big="x" * 5000))  # a first row always fits, however large
    assert not page.add(LogLine(seq=2))
    small = Page(1000, JobLog, "lines", known)
    rows = 0
    while small.add(LogLine(seq=rows, pad="p" * 50)):
        rows += 1
    reply = small.reply(**known, next_after=10**18 - 1)  # the longest envelope there is
    assert reply.model is JobLog
    assert len(reply.text.encode()) <= 1000
    body = json.loads(reply.text)
    assert body["lines"][-1]["seq"] == rows - 1
    assert body["nextAfter"] == 10**18 - 1 and body["jobId"] == "j" * 128


def _load(tmp_path: Path, server: str) -> ServerConfig:
    p = tmp_path / "aftd.toml"
    p.write_text("[server]\n" + server)
    return load_config(p).server


def test_server_limit_defaults(tmp_path: Path) -> None:
    cfg = _load(tmp_path, "")
    assert (cfg.max_params_bytes, cfg.max_page_bytes, cfg.max_connections) == (65536, 1 << 20,
                                                                               256)
    assert (cfg.header_timeout_s, cfg.body_timeout_s, cfg.keepalive_timeout_s) == (10, 30, 15)
    assert load_config(None).server == ServerConfig()


@pytest.mark.parametrize(("text", "key", "reason"), [
    ("max_params_bytes = 10\n", "server.max_params_bytes", ">= 64"),
    ("max_body_bytes = 4096\nmax_params_bytes = 8192\n", "server.max_params_bytes",
     "max_body_bytes"),
    ("max_page_bytes = 100\n", "server.max_page_bytes", ">= 4096"),
    ("header_timeout_s = 0\n", "server.header_timeout_s", ">= 0.1"),
    ("body_timeout_s = -1\n", "server.body_timeout_s", ">= 0.1"),
    ("keepalive_timeout_s = \"x\"\n", "server.keepalive_timeout_s", "a number"),
    ("max_connections = 0\n", "server.max_connections", ">= 1"),
    ("max_connections = 1.5\n", "server.max_connections", "an integer"),
])
def test_server_limit_errors_name_the_key(tmp_path: Path, text: str, key: str,
                                          reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, text)
    assert key in str(err.value) and reason in str(err.value)


def test_example_config_documents_every_server_key() -> None:
    path = Path(__file__).resolve().parents[2] / "config" / "aftd.example.toml"
    assert load_config(path).server == ServerConfig(tls_cert=None, tls_key=None)
    example = path.read_text()
    for key in ("max_params_bytes", "max_page_bytes", "header_timeout_s", "body_timeout_s",
                "keepalive_timeout_s", "max_connections"):
        assert f"\n{key} = " in example, key


async def _raw(port: int, ctx: ssl.SSLContext, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                                   server_hostname="127.0.0.1")
    writer.write(data)
    out = await asyncio.wait_for(reader.read(), 20)
    writer.close()
    return out


async def test_listener_falls_back_to_aiohttps_handler_if_its_api_changed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """If RequestHandler.handle_error ever changes shape, the daemon still serves (loudly)."""
    monkeypatch.setattr(api_server, "_self_test", lambda: False)
    cert, key = ensure_self_signed(tmp_path)
    cfg = ServerConfig(port=free_port())
    srv = ApiServer(cfg, server_context(cert, key))
    async def ok_handler(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/ok", ok_handler)
    srv.bind()
    with capture_logs() as logs:
        await srv.start(app)
    assert [e["event"] for e in logs] == ["http_error_handler_fallback"]
    try:
        client = ssl.create_default_context(cafile=str(cert))
        ok = await _raw(cfg.port, client, b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert ok.startswith(b"HTTP/1.1 200") and b'"ok": true' in ok
        bad = await _raw(cfg.port, client, b"BOGUS\r\n\r\n")
        assert bad.startswith(b"HTTP/1.0 400")  # aiohttp's own plain-text answer
    finally:
        await srv.close()
    assert srv.open_connections == 0


async def test_listener_answers_parse_errors_as_json(tmp_path: Path) -> None:
    cert, key = ensure_self_signed(tmp_path)
    cfg = ServerConfig(port=free_port())
    srv = ApiServer(cfg, server_context(cert, key))
    srv.bind()
    await srv.start(web.Application())
    try:
        client = ssl.create_default_context(cafile=str(cert))
        bad = await _raw(cfg.port, client, b"BOGUS\r\n\r\n")
        head, _, body = bad.partition(b"\r\n\r\n")
        assert b"application/json" in head
        assert json.loads(body)["error"]["code"] == "bad_http_request"
    finally:
        await srv.close()
