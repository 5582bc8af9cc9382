"""SyncJS pieces on their own: the engine's error format (which the line numbers are read from),
the metadata comment, the loader's view of .js files, the host callable's refusal to raise, and
what the prelude sends for each HttpCli form (a recording host stands in for the daemon here;
tests/scripts/test_syncjs_daemon.py runs the same calls against real servers)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import quickjs

from aftd.jobs.timeouts import declared_timeout
from aftd.scripts.context import JobContext, Services
from aftd.scripts.isolation import wants_process
from aftd.scripts.loader import ScriptError, ScriptLoader
from aftd.scripts.syncjs.engine import PRELUDE
from aftd.scripts.syncjs.errors import parse_js_error
from aftd.scripts.syncjs.host import UNSUPPORTED, Host
from aftd.scripts.syncjs.meta import parse_meta
from aftd.secrets.chain import SecretChain
from aftd.secrets.config import SecretsConfig
from aftd.secrets.env import EnvProvider
from aftd.vfs.registry import VfsPool


def _uncaught(source: str, host: Any = None) -> str:
    js = quickjs.Context()
    if host is not None:
        js.add_callable("__aftd_host", host)
        js.eval(PRELUDE)
    with pytest.raises(quickjs.JSException) as caught:
        js.eval(source)
    return str(caught.value)


# -- the engine's error text ---------------------------------------------------------------

def test_syntax_error_position() -> None:
    err = parse_js_error(_uncaught("var a = 1;\nvar b = ;\n"), "s.js")
    assert (err.message, err.line, err.column, err.syntax) == (
        "SyntaxError: unexpected token in expression: ';'", 2, 9, True)
    assert err.describe("s.js") == ("SyntaxError: unexpected token in expression: ';' "
                                     "(at line 2, column 9 of s.js)")


def test_runtime_error_position_and_stack() -> None:
    source = "function f() {\n  var a = null;\n  return a.x;\n}\n\nf();\n"
    err = parse_js_error(_uncaught(source), "r.js")
    assert (err.message, err.line, err.column, err.syntax) == (
        "TypeError: cannot read property 'x' of null", 3, 10, False)
    assert err.stack == "    at f (r.js:3:10)\n    at <eval> (r.js:6:1)"


def test_a_syntax_error_raised_while_running_is_a_runtime_error() -> None:
    err = parse_js_error(_uncaught("\nJSON.parse('{');\n"), "j.js")
    assert err.message.startswith("SyntaxError") and not err.syntax
    assert (err.line, err.column) == (2, 6)  # the script's call, not the position in the JSON


def test_a_runaway_recursion_keeps_its_position() -> None:
    js = quickjs.Context()
    js.set_max_stack_size(256 << 10)
    with pytest.raises(quickjs.StackOverflow) as caught:
        js.eval("function f(n) {\n  return f(n + 1) + 1;\n}\nf(0);\n")
    err = parse_js_error(str(caught.value), "deep.js")
    assert (err.message, err.line) == ("RangeError: Maximum call stack size exceeded", 2)
    assert len(err.stack.splitlines()) <= 10  # the engine keeps Error.stackTraceLimit frames


def test_thrown_values_that_are_not_errors_have_no_line() -> None:
    err = parse_js_error(_uncaught("throw 'plain text';"), "t.js")
    assert (err.message, err.line) == ("plain text", None)
    assert err.describe("t.js") == "plain text (line unknown in t.js)"


def test_host_errors_point_at_the_scripts_line() -> None:
    def host(op: str, raw: str) -> str:
        return json.dumps({"v": []} if op == "unsupported.names" else {"e": "no such secret"})

    err = parse_js_error(_uncaught("\n\nvar t = GetSecret('x');\n", host), "h.js")
    assert (err.message, err.line, err.column) == ("Error: no such secret", 3, 9)


# -- metadata --------------------------------------------------------------------------------

@pytest.mark.parametrize(("source", "name", "description", "timeout"), [
    ("// Move files.\n// @name mover\n// @timeout 90\nvar x;\n", "mover", "Move files.", 90),
    ("\ufeff/*\n * Block comment.\n * @timeout 1.5\n */\n", None, "Block comment.", 1.5),
    ("// @timeout soon\n// Desc after tag.\n", None, "Desc after tag.", "<soon>"),
    ("var x = 1; // not a header\n", None, "", None),
])
def test_metadata_from_the_leading_comment(source: str, name: str | None, description: str,
                                           timeout: object) -> None:
    meta = parse_meta(source)
    assert (meta.name, meta.description, meta.timeout_s) == (name, description, timeout)


# -- the loader --------------------------------------------------------------------------------

def test_js_scripts_are_listed_and_found(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text('"""Python."""\nasync def main(job):\n    pass\n')
    (tmp_path / "b.js").write_text("// SyncJS.\n// @name Bee\n// @timeout 5\n")
    (tmp_path / "_hidden.js").write_text("")
    (tmp_path / "notes.txt").write_text("")
    loader = ScriptLoader(tmp_path)
    assert [(s.id, s.language) for s in loader.scripts()] == [("a", "python"), ("b", "syncjs")]
    info = loader.find(name="bee")
    assert (info.id, info.description, info.timeout_s) == ("b", "SyncJS.", 5)
    assert declared_timeout(info, None) == 5.0
    with pytest.raises(ScriptError, match="runs in a worker process, and this daemon runs none"):
        wants_process(info, None)
    with pytest.raises(ScriptError, match="is a syncjs script"):
        loader.load_main(info)


def test_ambiguous_ids_and_bad_timeouts_are_refused(tmp_path: Path) -> None:
    (tmp_path / "dup.py").write_text("async def main(job):\n    pass\n")
    (tmp_path / "dup.js").write_text("")
    (tmp_path / "late.js").write_text("// @timeout soon\n")
    loader = ScriptLoader(tmp_path)
    assert [s.language for s in loader.scripts() if s.id == "dup"] == ["python"]
    with pytest.raises(ScriptError, match=r"'dup' is ambiguous: both dup\.py and dup\.js"):
        loader.find(script_id="dup")
    with pytest.raises(ScriptError, match="@timeout must be a number of seconds"):
        declared_timeout(loader.find(script_id="late"), None)


# -- the host callable -------------------------------------------------------------------------

LOG_LINES: list[tuple[str, str]] = []


@pytest.fixture
def host() -> Host:
    """A host whose calls need no event loop (the bridge is never used)."""
    LOG_LINES.clear()
    secrets = SecretChain(SecretsConfig(order=("env",)), providers=[EnvProvider({})])
    ctx = JobContext("job-1", "s", {"n": 5}, _Log(), Services(secrets=secrets,
                                                             vfs=VfsPool({}, secrets)))
    return Host(ctx, ctx.log, None, lambda _: None, "s.js")  # type: ignore[arg-type]


class _Log:
    def __getattr__(self, level: str) -> Any:
        return lambda event, **_: LOG_LINES.append((level, event))


@pytest.mark.parametrize(("op", "raw", "error"), [
    ("params", "not json", "Expecting value"),
    ("params", "[1]", "host call without an arguments object"),
    ("params", '{"name": 5}', "Params: name must be a string"),
    ("nope", "{}", "unknown host call 'nope'"),
    ("exit", '{"code": "x"}', "Exit: code must be an integer, got x"),
    ("exit", '{"code": 1.5}', "Exit: code must be an integer, got 1.5"),
    ("sleep", '{"ms": -1}', "Sleep: ms must be a number from 0 to"),
])
def test_the_host_answers_errors_instead_of_raising(host: Host, op: str, raw: str,
                                                    error: str) -> None:
    answer = json.loads(host(op, raw))
    assert error in answer["e"]


def test_the_host_answers_params_and_logs(host: Host) -> None:
    assert json.loads(host("params", '{"name": "n"}')) == {"v": "5"}
    assert json.loads(host("params", '{"name": "gone"}')) == {}
    assert json.loads(host("log", json.dumps({"level": "warning", "msg": "x" * 2500}))) == {}
    assert [(lvl, len(e)) for lvl, e in LOG_LINES] == [
        ("warning", 1000), ("warning", 1000), ("warning", 500)]
    assert json.loads(host("unsupported.names", "{}"))["v"] == list(UNSUPPORTED)


# -- what the prelude sends ------------------------------------------------------------------

def _recording_prelude() -> tuple[quickjs.Context, list[tuple[str, Any]]]:
    calls: list[tuple[str, Any]] = []

    def host(op: str, raw: str) -> str:
        calls.append((op, json.loads(raw)))
        if op == "unsupported.names":
            return json.dumps({"v": list(UNSUPPORTED)})
        return json.dumps({"v": {"status": 201, "headers": {"x-a": "b"}, "body": "ok",
                                 "error": ""}})

    js = quickjs.Context()
    js.add_callable("__aftd_host", host)
    js.eval(PRELUDE)
    return js, calls


def test_http_builder_sends_each_form() -> None:
    js, calls = _recording_prelude()
    assert js.eval("var r = HttpCli().Url('https://o/x').Bearer('t').Timeout(5).Post(null);"
                   "[r.Ok(), r.StatusCode(), r.BodyAsString(), r.Header('X-A')].join()") == \
        "true,201,ok,b"
    js.eval("HttpCli().Url('https://o/y').Header('X-K', 'v').Post({a: [1]})")
    js.eval("HttpCli().Url('https://o/z').Put('text')")
    sent = [args for op, args in calls if op == "http"]
    assert sent == [
        {"method": "POST", "url": "https://o/x", "headers": {"Authorization": "Bearer t"},
         "timeout": 5, "body": None},
        {"method": "POST", "url": "https://o/y", "timeout": None, "body": '{"a":[1]}',
         "headers": {"X-K": "v", "Content-Type": "application/json"}},
        {"method": "PUT", "url": "https://o/z", "headers": {}, "timeout": None, "body": "text"},
    ]


def test_copy_failures_are_results_not_exceptions() -> None:
    js, calls = _recording_prelude()
    assert js.eval("var v = VirtualFSByName('a'); var r = v.CopyToVFS(undefined, v, 'in');"
                   "[r.Ok(), r.ErrorMsg()].join('|')") == \
        "false|CopyToVFS: path must be a string, got undefined"
    assert not [op for op, _ in calls if op == "vfs.copy"]
