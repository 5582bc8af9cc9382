"""Only valid JSON in, only valid JSON out, and no request the daemon cannot answer with a 4xx.

Every case goes to the real daemon over raw TLS sockets; every response body must parse as
strict JSON with the API's error shape, and the daemon's log must hold no traceback.
"""

from __future__ import annotations

import sqlite3
import time

import pytest

from tests.api.rawclient import (
    KEY,
    assert_error,
    assert_no_traceback,
    call,
    request_bytes,
    send,
)
from tests.fixtures.daemon import DaemonProcess

NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e999999", "-1e999999"]


@pytest.mark.parametrize("token", NON_FINITE)
@pytest.mark.parametrize(("template", "field"), [
    ('{"scriptId": "hello", "params": {"a": %s}}', "params.a"),
    ('{"scriptId": "hello", "params": [{"name": "n", "value": %s}]}', "params[0].value"),
    ('{"scriptId": %s}', "scriptId"),
    ('{"scriptId": "hello", "params": {"ok": 1, "deep": [1, {"x": %s}]}}', "params.deep[1].x"),
])
def test_non_finite_numbers_are_refused_naming_the_field(
        hostile: DaemonProcess, token: str, template: str, field: str) -> None:
    status, data = call(hostile, "POST", "/v1/jobs", (template % token).encode())
    assert_error(status, data, 400, "invalid_json")
    assert field in data["error"]["message"]
    assert token.lstrip("-") in data["error"]["message"]


def test_a_non_finite_number_never_becomes_a_job(hostile: DaemonProcess) -> None:
    before = call(hostile, "GET", "/v1/jobs?limit=1000&params=true")[1]["jobs"]
    for token in NON_FINITE:
        call(hostile, "POST", "/v1/jobs", f'{{"scriptId":"hello","params":{{"a":{token}}}}}'.encode())
    after = call(hostile, "GET", "/v1/jobs?limit=1000&params=true")[1]["jobs"]
    assert len(after) == len(before)


@pytest.mark.parametrize("depth", [10_000, 100])
def test_deep_nesting_is_400(hostile: DaemonProcess, depth: int) -> None:
    for body in (b'{"scriptId": "hello", "params": ' + b"[" * depth + b"]" * depth + b"}",
                 b'{"a":' * depth + b"1" + b"}" * depth):
        status, data = call(hostile, "POST", "/v1/jobs", body)
        assert_error(status, data, 400, "too_deep")
        assert "32" in data["error"]["message"]
    assert_no_traceback(hostile)


def test_unpaired_surrogate_escape_is_refused(hostile: DaemonProcess) -> None:
    status, data = call(hostile, "POST", "/v1/jobs",
                        b'{"scriptId": "hello", "params": {"a": "x\\ud800y"}}')
    assert_error(status, data, 400, "invalid_json")
    assert "params.a" in data["error"]["message"]


def test_params_over_max_params_bytes_is_413(hostile: DaemonProcess) -> None:
    # 4096 bytes as compact JSON: {"a":"<4088 x>"} is 4096 exactly.
    status, job = call(hostile, "POST", "/v1/jobs", {"scriptId": "hello",
                                                     "params": {"a": "x" * 4088}})
    assert status == 201, job
    status, data = call(hostile, "POST", "/v1/jobs", {"scriptId": "hello",
                                                      "params": {"a": "x" * 4089}})
    assert_error(status, data, 413, "params_too_large")
    assert "server.max_params_bytes = 4096" in data["error"]["message"]
    # Non-ASCII counts in UTF-8 bytes, not characters.
    status, data = call(hostile, "POST", "/v1/jobs", {"scriptId": "hello",
                                                      "params": {"a": "é" * 2100}})
    assert_error(status, data, 413, "params_too_large")


@pytest.mark.parametrize(("name", "value"), [
    (b"X-API-Key", b"\xff\xfe\xfd"),
    (b"X-API-Key", KEY + b"\x80"),
    (b"Idempotency-Key", b"\xc3\x28"),
    (b"X-Request-Id", b"\xed\xa0\x80"),
    (b"User-Agent", b"\xf8\x88\x80\x80\x80"),
])
def test_invalid_utf8_in_a_header_is_400(hostile: DaemonProcess, name: bytes,
                                         value: bytes) -> None:
    headers = [(name, value)] if name == b"X-API-Key" else [(b"X-API-Key", KEY), (name, value)]
    for method, path, body in (("GET", "/v1/jobs", None),
                               ("POST", "/v1/jobs", b'{"scriptId": "hello"}')):
        status, _, data = send(hostile, request_bytes(method, path, headers, body))
        assert_error(status, data, 400, "bad_header")
        assert name.decode().lower() in data["error"]["message"].lower()
    assert_no_traceback(hostile)


def test_valid_non_ascii_key_is_just_a_wrong_key(hostile: DaemonProcess) -> None:
    status, _, data = send(hostile, request_bytes("GET", "/v1/jobs",
                                                  [(b"X-API-Key", "clé-ключ".encode())]))
    assert_error(status, data, 401, "unauthorized")


@pytest.mark.parametrize("key", ["a\tb", "x" * 201, "ключ"])
def test_bad_idempotency_key_is_400(hostile: DaemonProcess, key: str) -> None:
    status, data = call(hostile, "POST", "/v1/jobs", {"scriptId": "hello"},
                        [(b"Idempotency-Key", key.encode())])
    assert_error(status, data, 400, "bad_request")
    assert "Idempotency-Key" in data["error"]["message"]


MALFORMED = [
    ("bad content-length", b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nX-API-Key: " + KEY
     + b"\r\nContent-Length: 12abc\r\n\r\n{}"),
    ("negative content-length", b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n"),
    ("two content-lengths", b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
     b"Content-Length: 3\r\n\r\n{}"),
    ("garbage request line", b"\x16\x03\x01 hello\r\n\r\n"),
    ("no http version", b"GET /v1/jobs\r\n\r\n"),
    ("request line too long", b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("header too long", b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 20_000
     + b"\r\n\r\n"),
    ("NUL in header", b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\nX-API-Key: a\x00b\r\n\r\n"),
    ("bad chunk size", b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nX-API-Key: " + KEY
     + b"\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"),
    ("header without colon", b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n"),
]


@pytest.mark.parametrize("data", [m[1] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_http_gets_a_json_4xx(hostile: DaemonProcess, data: bytes) -> None:
    status, _, body = send(hostile, data)
    assert 400 <= status < 500, (status, body)
    assert set(body) == {"error"} and body["error"]["code"] and body["error"]["message"]
    # The parser's message quotes the request's bytes on later lines: never echoed back.
    assert KEY.decode() not in body["error"]["message"]
    assert_no_traceback(hostile)


def test_malformed_request_is_logged_as_one_line_without_its_bytes(
        hostile: DaemonProcess) -> None:
    marker = b"marker-7c1e0f"
    send(hostile, b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: " + marker
         + b"\r\n\r\n")
    deadline = time.monotonic() + 10
    while '"http_request_rejected"' not in hostile.logs() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert '"http_request_rejected"' in hostile.logs()
    assert marker.decode() not in hostile.logs()


BAD_QUERIES = [
    ("/v1/jobs?limit=%ff", 400), ("/v1/jobs?limit=%C2%B2", 400), ("/v1/jobs?limit=-1", 400),
    ("/v1/jobs?limit=0x10", 400), ("/v1/jobs?cursor=99999999999999999999999999", 400),
    ("/v1/jobs?cursor=" + "9" * 5000, 400), ("/v1/jobs?%ff%fe=1", 400),
    ("/v1/jobs?status=%00", 400), ("/v1/jobs?params=maybe", 400),
    ("/v1/jobs/%ff%fe", 404), ("/v1/jobs/%00", 404), ("/v1/jobs/" + "a" * 500, 404),
    ("/v1/jobs/%C3%A9/cancel", 404), ("/v1/jobs/%ED%A0%80/log", 404),
]


@pytest.mark.parametrize(("path", "expected"), BAD_QUERIES, ids=[q[0][:40] for q in BAD_QUERIES])
def test_bad_query_strings_and_ids(hostile: DaemonProcess, path: str, expected: int) -> None:
    method = "POST" if path.endswith("/cancel") else "GET"
    status, data = call(hostile, method, path)
    assert_error(status, data, expected)


@pytest.mark.parametrize("after", ["%C2%B2", "1e5", "-1", "9" * 5000, "%ff"])
def test_bad_log_cursor_is_400(hostile: DaemonProcess, after: str) -> None:
    status, job = call(hostile, "POST", "/v1/jobs", {"scriptId": "hello"})
    assert status == 201
    status, data = call(hostile, "GET", f"/v1/jobs/{job['jobId']}/log?after={after}")
    assert_error(status, data, 400, "bad_request")


def test_stored_non_finite_values_come_out_as_strict_json(hostile: DaemonProcess) -> None:
    """A row written before the API refused NaN must not break GET /v1/jobs for anyone."""
    status, job = call(hostile, "POST", "/v1/jobs", {"scriptId": "hello", "params": {"a": 1}})
    assert status == 201
    deadline = time.monotonic() + 30
    while call(hostile, "GET", f"/v1/jobs/{job['jobId']}")[1]["status"] in ("queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    with sqlite3.connect(hostile.state_dir / "aftd.sqlite", timeout=30) as db:
        db.execute("UPDATE jobs SET params = ? WHERE id = ?",
                   ('{"a": NaN, "b": Infinity, "c": -Infinity, "d": 1}', job["jobId"]))
    # The runner answers from memory until the job's end hooks ran: poll until the row is read.
    while True:
        status, one = call(hostile, "GET", f"/v1/jobs/{job['jobId']}")  # strict parse in call()
        assert status == 200
        if one["params"] != {"a": 1} or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert one["params"] == {"a": None, "b": None, "c": None, "d": 1}
    status, page = call(hostile, "GET", "/v1/jobs?params=true&limit=1000")
    assert status == 200
    assert {"a": None, "b": None, "c": None, "d": 1} in [j.get("params") for j in page["jobs"]]


def test_daemon_still_serves_and_logged_no_traceback(hostile: DaemonProcess) -> None:
    status, job = call(hostile, "POST", "/v1/jobs", {"scriptId": "hello"})
    assert status == 201, job
    assert_no_traceback(hostile)
