"""The route table, the generated document and the request models, without a daemon."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from aftd.api.app import ROUTES
from aftd.api.errors import ApiError, Reply
from aftd.api.jobs import _TRIGGER_ORDER
from aftd.api.openapi import openapi_document
from aftd.api.requests import JobsQuery, LogQuery, TriggerHeaders, TriggerRequest
from aftd.api.responses import Health, Livez
from aftd.api.validation import first_error, try_validate, validate

README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_routes() -> set[tuple[str, str]]:
    text = README.read_text()
    section = text.split("\n## REST API\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `(GET|POST|PUT|PATCH|DELETE) (/\S*)` \|", section, re.M))


def test_readme_rest_table_lists_every_route_and_no_other() -> None:
    assert _readme_routes() == {(r.method, r.path) for r in ROUTES.routes}


def test_document_is_valid_and_complete() -> None:
    doc = openapi_document(ROUTES)
    assert doc["openapi"].startswith("3.1")
    for schema in doc["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    ops = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ops) == len(set(ops)) == len(ROUTES.routes)
    # Query and header models are parameters, not components.
    assert not {"JobsQuery", "LogQuery", "TriggerHeaders"} & set(doc["components"]["schemas"])
    report = doc["components"]["schemas"]["Report"]
    assert {"lastStatus", "deliveredAt", "nextAttemptAt", "idempotencyKey"} <= set(
        report["required"])
    params = doc["components"]["schemas"]["TriggerRequest"]["properties"]["params"]["anyOf"]
    assert params[1]["propertyNames"]["pattern"].startswith("^[A-Za-z_]")
    assert "patternProperties" not in params[1]
    header = doc["paths"]["/v1/jobs"]["post"]["parameters"][0]
    assert (header["name"], header["in"], header["schema"]["maxLength"]) == (
        "Idempotency-Key", "header", 200)
    assert openapi_document(ROUTES) is doc  # built once


def test_every_route_documents_its_error_statuses() -> None:
    doc = openapi_document(ROUTES)
    for r in ROUTES.routes:
        statuses = {int(s) for s in doc["paths"][r.path][r.method.lower()]["responses"]}
        assert 400 in statuses
        assert ({401, 403} <= statuses) != r.public
        assert ({408, 413} <= statuses) == (r.method == "POST")


def test_a_reply_the_route_does_not_document_is_refused() -> None:
    health = ROUTES.find("getHealth")
    health.check(Reply.of(Health(status="ok", version="1", uptime_seconds=1.0,
                                 jobs={"running": 0, "queued": 0}), 200))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="does not document"):
        health.check(Reply.of(Livez(status="ok"), 200))
    with pytest.raises(TypeError, match="does not document"):
        ROUTES.find("livez").check(Reply.of(Livez(status="ok"), 201))


def test_trigger_order_names_every_field_once() -> None:
    fields = [f.alias for f in TriggerRequest.model_fields.values()]
    assert sorted(_TRIGGER_ORDER) == sorted([*fields, "Idempotency-Key"])


LIMIT = {"max_params_bytes": 64}
TRIGGER_ERRORS: list[tuple[Any, str, str]] = [
    ({"scriptId": "a", "bogus": 1, "aaa": 2}, "bad_request",
     "unknown field 'aaa'; allowed: scriptId, scriptName, params, timeoutS"),
    ({"script_id": "a"}, "bad_request", "unknown field 'script_id'"),
    ({"scriptId": 5}, "bad_request", "'scriptId' must be a non-empty string"),
    ({"scriptName": ""}, "bad_request", "'scriptName' must be a non-empty string"),
    ({"scriptId": None, "scriptName": "x"}, "bad_request", "'scriptId' must be a non-empty"),
    ({"scriptId": "a", "scriptName": 1}, "bad_request", "'scriptName' must be a non-empty"),
    ({"params": "x"}, "bad_request", "give exactly one of 'scriptId' or 'scriptName'"),
    ({"scriptId": "a", "scriptName": "b"}, "bad_request", "give exactly one of"),
    ({"scriptId": "a", "params": 3}, "invalid_params",
     "'params' must be a list of {name, value} objects or an object, got int"),
    ({"scriptId": "a", "params": [1]}, "invalid_params",
     "params[0] must be an object with 'name' and 'value'"),
    ({"scriptId": "a", "params": [{"name": "a", "value": 1, "z": 1, "y": 2}]},
     "invalid_params", "params[0] has unknown field 'y'"),
    ({"scriptId": "a", "params": [{"value": 1}]}, "invalid_params",
     "params[0].name must be a string"),
    ({"scriptId": "a", "params": [{"name": "1a"}]}, "invalid_params",
     "params[0] ('1a') has no 'value'"),
    ({"scriptId": "a", "params": [{"name": "1a", "value": 1}]}, "invalid_params",
     "params[0]: invalid parameter name '1a' (letters, digits, _ . -; starting with a letter"),
    ({"scriptId": "a", "params": [{"name": "a", "value": 1}, {"name": "a", "value": 2}]},
     "invalid_params", "params[1]: parameter 'a' given twice"),
    ({"scriptId": "a", "params": {"a": {"b": 1}}}, "invalid_params",
     "params.a: parameter 'a' must be a string, number or boolean, got an object"),
    ({"scriptId": "a", "params": {"a": None}}, "invalid_params", "got null"),
    ({"scriptId": "a", "params": {f"p{i}": 1 for i in range(257)}}, "invalid_params",
     "too many parameters (at most 256)"),
    ({"scriptId": "a", "params": {"a": "x" * 64}}, "params_too_large",
     "params are 72 bytes as JSON; the limit is server.max_params_bytes = 64"),
    ({"scriptId": "a", "params": {"a": "x" * 64}, "timeoutS": -1}, "params_too_large", ""),
    ({"scriptId": "a", "timeoutS": True}, "invalid_timeout",
     "'timeoutS' must be a number of seconds >= 0 (0: no limit)"),
    ({"scriptId": "a", "timeoutS": 10**400}, "invalid_timeout", "'timeoutS' must be"),
]


@pytest.mark.parametrize(("body", "code", "message"), TRIGGER_ERRORS)
def test_trigger_errors_name_the_field(body: Any, code: str, message: str) -> None:
    req, problems = try_validate(TriggerRequest, body, LIMIT)
    assert req is None
    err = first_error(problems, _TRIGGER_ORDER)
    assert (err.code, err.status) == (code, 413 if code == "params_too_large" else 400)
    assert message in err.message, err.message


def test_trigger_problems_are_told_script_first_then_header_then_params() -> None:
    bad_key = {"Idempotency-Key": "ключ"}
    for body, expect in (({"params": {"a": [1]}}, "give exactly one"),
                         ({"scriptId": "a", "params": {"a": [1]}}, "Idempotency-Key must be"),
                         ({"scriptId": 1, "params": {"a": [1]}}, "'scriptId' must be")):
        problems = try_validate(TriggerRequest, body, LIMIT)[1] + try_validate(
            TriggerHeaders, bad_key)[1]
        assert first_error(problems, _TRIGGER_ORDER).message.startswith(expect)


def test_trigger_accepts_both_params_forms_and_keeps_types() -> None:
    a = validate(TriggerRequest, {"scriptName": "x", "params": [
        {"name": "n", "value": 1}, {"name": "b", "value": True}, {"name": "f", "value": 1.0}]})
    b = validate(TriggerRequest, {"scriptName": "x", "params": {"n": 1, "b": True, "f": 1.0}})
    assert a.params == b.params == {"n": 1, "b": True, "f": 1.0}
    assert [type(v) for v in a.params.values()] == [int, bool, float]
    assert validate(TriggerRequest, {"scriptId": "x", "timeoutS": 5}).timeout_s == 5.0


@pytest.mark.parametrize(("query", "message"), [
    ({"frobnicate": "1", "bogus": "2"}, "unknown query parameter 'bogus'"),
    ({"limit": "abc"}, "'limit' must be a positive integer (at most 18 digits), got 'abc'"),
    ({"limit": "²"}, "'limit' must be a positive integer"),
    ({"limit": "0"}, "'limit' must be between 1 and 1000, got 0"),
    ({"cursor": "9" * 19}, "'cursor' must be a positive integer (at most 18 digits)"),
    ({"status": "queued,bogus"}, "status 'bogus' is not one of queued, running, succeeded"),
    ({"params": "maybe"}, "'params' must be true or false, got 'maybe'"),
])
def test_jobs_query_errors_name_the_parameter(query: dict[str, str], message: str) -> None:
    with pytest.raises(ApiError) as info:
        validate(JobsQuery, query)
    assert (info.value.status, info.value.code) == (400, "bad_request")
    assert info.value.message.startswith(message), info.value.message


def test_queries_parse() -> None:
    q = validate(JobsQuery, {"status": ",failed,,running", "scriptId": "s", "limit": "007",
                             "cursor": "12", "params": "true"})
    assert (q.status, q.script_filter, q.limit, q.cursor, q.params) == (
        ("failed", "running"), "s", 7, 12, True)
    assert validate(LogQuery, {"after": "0", "follow": "false", "other": "x"}).after == 0
    with pytest.raises(ApiError) as info:
        validate(LogQuery, {"after": "-1"})
    assert info.value.message.startswith("'after' must be a non-negative integer")
