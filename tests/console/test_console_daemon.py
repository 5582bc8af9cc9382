"""The console's sessions and switch across config reloads, without a browser: a disabled
console serves nothing; a session acts with its key's scopes as configured now."""

from __future__ import annotations

import asyncio
import signal
import textwrap
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tests.fixtures.daemon import API_KEY_SHA256, Api, DaemonProcess

KEY = """
[[auth.api_keys]]
name = "ops"
sha256 = "{sha}"
scopes = {scopes}
"""


def _keys(scopes: str) -> str:
    return textwrap.dedent(KEY.format(sha=API_KEY_SHA256, scopes=scopes))


async def _reload(d: DaemonProcess, keys: str, n: int) -> None:
    d.write_config("", keys)
    d.signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while d.logs().count('"config_reloaded"') < n:
        assert time.monotonic() < deadline, d.logs()[-2000:]
        await asyncio.sleep(0.05)


async def _sign_in(api: Api, d: DaemonProcess) -> tuple[dict[str, str], dict[str, Any]]:
    """Sign in with the API key: the session cookie as a header, and the session."""
    async with api.session.post(d.url + "/v1/session", headers=api.headers(),
                                ssl=d.ssl_context()) as r:
        assert r.status == 201
        return {"Cookie": r.headers["Set-Cookie"].split(";")[0]}, await r.json()


async def test_a_session_follows_its_keys_scopes_across_reloads_and_ends_with_the_key(
        make_daemon: Callable[..., Awaitable[DaemonProcess]]) -> None:
    d = await make_daemon(api_keys=_keys('["jobs:read", "jobs:trigger"]'))
    api = Api(d)
    try:
        cookie, session = await _sign_in(api, d)
        api.key = None  # from here on only the cookie speaks
        csrf = {**cookie, "X-CSRF-Token": session["csrfToken"]}
        status, body = await api.request("POST", "/v1/jobs", json={"scriptId": "hello"},
                                         headers=csrf)
        assert status == 201, body
        await _reload(d, _keys('["jobs:read"]'), 1)
        status, body = await api.request("POST", "/v1/jobs", json={"scriptId": "hello"},
                                         headers=csrf)
        assert (status, body["error"]["code"]) == (403, "missing_scope"), body
        assert (await api.request("GET", "/v1/jobs", headers=cookie))[0] == 200
        await _reload(d, _keys('["admin"]').replace(API_KEY_SHA256, "0" * 64), 2)
        status, body = await api.request("GET", "/v1/jobs", headers=cookie)
        assert status == 401 and "no longer configured" in body["error"]["message"], body
    finally:
        await api.close()


async def test_a_disabled_console_serves_no_pages_and_no_sign_in(
        make_daemon: Callable[..., Awaitable[DaemonProcess]]) -> None:
    d = await make_daemon(extra_config="[console]\nenabled = false\n")
    api = Api(d)
    try:
        for path in ("/ui/", "/ui/jobs", "/ui/static/app.js"):
            status, body = await api.request("GET", path)
            assert (status, body["error"]["code"]) == (404, "console_disabled"), (path, body)
        status, body = await api.request("POST", "/v1/session")
        assert (status, body["error"]["code"]) == (404, "console_disabled"), body
        # A stray cookie means nothing: the key decides, as without a console.
        status, body = await api.request("GET", "/v1/jobs",
                                         headers={"Cookie": "__Host-aftd_session=x"})
        assert status == 200, body
        api.key = None
        status, body = await api.request("GET", "/v1/jobs",
                                         headers={"Cookie": "__Host-aftd_session=x"})
        assert status == 401, body
    finally:
        await api.close()


async def test_a_restart_signs_everyone_out(
        make_daemon: Callable[..., Awaitable[DaemonProcess]]) -> None:
    d = await make_daemon()
    api = Api(d)
    try:
        cookie, _ = await _sign_in(api, d)
        api.key = None
        assert (await api.request("GET", "/v1/jobs", headers=cookie))[0] == 200
        d.stop()
        await d.start()
        status, body = await api.request("GET", "/v1/jobs", headers=cookie)
        assert status == 401 and "sign in again" in body["error"]["message"], body
    finally:
        await api.close()
