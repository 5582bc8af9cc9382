"""Bad input gets the documented status and JSON error, and the daemon keeps serving."""

from __future__ import annotations

import pytest

from tests.fixtures.daemon import Api, DaemonProcess


@pytest.fixture
def daemon(module_daemon: DaemonProcess) -> DaemonProcess:
    """One daemon for the module: each case sends a request and checks the answer."""
    return module_daemon


CASES = [
    ("malformed json", b"{not json", 400, "invalid_json"),
    ("not an object", b"[1, 2]", 400, "bad_request"),
    ("empty body", b"", 400, "bad_request"),
    ("neither script field", b'{"params": {}}', 400, "bad_request"),
    ("both script fields", b'{"scriptId": "hello", "scriptName": "hello"}', 400, "bad_request"),
    ("script id wrong type", b'{"scriptId": 5}', 400, "bad_request"),
    ("unknown field", b'{"scriptId": "hello", "bogus": 1}', 400, "bad_request"),
    ("params a string", b'{"scriptId": "hello", "params": "x"}', 400, "invalid_params"),
    ("params item not object", b'{"scriptId": "hello", "params": [1]}', 400, "invalid_params"),
    ("params item without value", b'{"scriptId": "hello", "params": [{"name": "a"}]}', 400,
     "invalid_params"),
    ("params name not string", b'{"scriptId": "hello", "params": [{"name": 1, "value": 2}]}',
     400, "invalid_params"),
    ("params nested value", b'{"scriptId": "hello", "params": {"a": {"b": 1}}}', 400,
     "invalid_params"),
    ("params null value", b'{"scriptId": "hello", "params": {"a": null}}', 400,
     "invalid_params"),
    ("params duplicate", b'{"scriptId": "hello", "params": [{"name": "a", "value": 1}, '
                         b'{"name": "a", "value": 2}]}', 400, "invalid_params"),
    ("unknown script id", b'{"scriptId": "nope"}', 404, "unknown_script"),
    ("unknown script name", b'{"scriptName": "Nope"}', 404, "unknown_script"),
    ("path traversal script id", b'{"scriptId": "../etc/passwd"}', 404, "unknown_script"),
]


@pytest.mark.parametrize(("label", "body", "status", "code"), CASES, ids=[c[0] for c in CASES])
async def test_bad_trigger(api: Api, label: str, body: bytes, status: int, code: str) -> None:
    got, err = await api.request("POST", "/v1/jobs", data=body,
                                 headers={"Content-Type": "application/json"})
    assert got == status, err
    assert err["error"]["code"] == code
    assert err["error"]["message"]
    # ... and the daemon still serves.
    ok, _ = await api.trigger("hello")
    assert ok == 201


async def test_error_messages_name_the_problem(api: Api) -> None:
    _, err = await api.request("POST", "/v1/jobs", json={"scriptId": "hello",
                                                         "params": [{"name": "a"}]})
    assert "params[0]" in err["error"]["message"]
    _, err = await api.request("POST", "/v1/jobs", json={"scriptId": "hello",
                                                         "params": {"a": [1]}})
    assert "'a'" in err["error"]["message"]


async def test_oversized_body_is_413(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d: DaemonProcess = await make_daemon(server_config="max_body_bytes = 2048")
    api = Api(d)
    try:
        status, err = await api.request("POST", "/v1/jobs", data=b"{" + b" " * 5000 + b"}",
                                        headers={"Content-Type": "application/json"})
        assert status == 413
        assert err["error"]["code"] == "too_large"
        assert (await api.trigger("hello"))[0] == 201
    finally:
        await api.close()


async def test_unknown_job_route_and_method(api: Api) -> None:
    status, err = await api.request("GET", "/v1/jobs/does-not-exist")
    assert (status, err["error"]["code"]) == (404, "unknown_job")
    status, err = await api.request("POST", "/v1/jobs/does-not-exist/cancel")
    assert status == 404
    status, err = await api.request("GET", "/v1/jobs/does-not-exist/log")
    assert status == 404
    status, err = await api.request("GET", "/v2/nothing")
    assert (status, err["error"]["code"]) == (404, "not_found")
    status, err = await api.request("DELETE", "/v1/jobs")
    assert (status, err["error"]["code"]) == (405, "method_not_allowed")


async def test_bad_query_parameters(api: Api) -> None:
    for q in ("limit=0", "limit=abc", "limit=5000", "cursor=-1", "frobnicate=1"):
        status, err = await api.request("GET", f"/v1/jobs?{q}")
        assert status == 400, q
        assert "error" in err
