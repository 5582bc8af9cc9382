"""API keys over the wire: 401 without or with a wrong key, 403 outside allow_from."""

from __future__ import annotations

import textwrap

import pytest

from tests.fixtures.daemon import API_KEY_SHA256, Api, DaemonProcess


@pytest.fixture
def daemon(module_daemon: DaemonProcess) -> DaemonProcess:
    """One daemon for the module's tests that only knock at it."""
    return module_daemon


async def test_missing_and_wrong_key_are_401(daemon: DaemonProcess) -> None:
    for key in (None, "wrong-key"):
        api = Api(daemon, key=key)
        try:
            for method, path in (("GET", "/v1/jobs"), ("POST", "/v1/jobs"),
                                 ("GET", "/v1/scripts"), ("GET", "/v1/health"),
                                 ("GET", "/v1/openapi.json"), ("GET", "/metrics")):
                status, err = await api.request(method, path)
                assert status == 401, (key, path)
                assert err["error"]["code"] == "unauthorized"
        finally:
            await api.close()


async def test_liveness_probe_is_public(daemon: DaemonProcess) -> None:
    api = Api(daemon, key=None)
    try:
        assert await api.request("GET", "/livez") == (200, {"status": "ok"})
    finally:
        await api.close()


async def test_key_outside_allow_from_is_403(make_daemon) -> None:  # type: ignore[no-untyped-def]
    keys = textwrap.dedent(f"""
        [[auth.api_keys]]
        name = "remote-only"
        sha256 = "{API_KEY_SHA256}"
        allow_from = ["10.0.0.0/8", "2001:db8::/32"]
    """)
    d = await make_daemon(api_keys=keys)
    api = Api(d)
    try:
        status, err = await api.request("GET", "/v1/jobs")
        assert status == 403
        assert "remote-only" in err["error"]["message"]
    finally:
        await api.close()
