"""Scoped API keys against the real daemon: every route refuses a key without its scope (403
naming the key and the scope) and serves one with it, ``admin`` grants all, ``scripts`` globs
limit triggers, ``/v1/me`` describes the caller; plus the route table's own rules and config
errors that name ``auth.api_keys[N].scopes``."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from aftd.api.app import ROUTES
from aftd.api.registry import Registry, json_body
from aftd.api.responses import Livez
from aftd.config import parse_config
from aftd.errors import ConfigError
from aftd.scopes import ALL_SCOPES, ANY_KEY, effective, grants, script_allowed
from tests.api.conftest import spawn
from tests.conftest import HELLO
from tests.fixtures.daemon import API_KEY, API_KEY_SHA256, Api, DaemonProcess

# One key per scope, holding only that scope, named after it ("jobs-read" holds jobs:read).
SCOPED = {s: f"key-for-{s.replace(':', '-')}" for s in ALL_SCOPES}
CLAIMS_KEY = "key-for-claims-only"
RO_KEY = "key-for-read-only"


def _key(name: str, key: str, extra: str = "") -> str:
    digest = hashlib.sha256(key.encode()).hexdigest()
    return f'[[auth.api_keys]]\nname = "{name}"\nsha256 = "{digest}"\n{extra}\n'


KEYS = (f'[[auth.api_keys]]\nname = "test"\nsha256 = "{API_KEY_SHA256}"\n'
        + "".join(_key(s.replace(":", "-"), k, f'scopes = ["{s}"]') for s, k in SCOPED.items())
        + _key("claims", CLAIMS_KEY, 'scopes = ["jobs:trigger", "jobs:read"]\n'
                                     'scripts = ["claim-*"]')
        + _key("ro", RO_KEY, 'scopes = ["jobs:read"]'))


@pytest.fixture(scope="module")
def scoped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    d = spawn(tmp_path_factory.mktemp("scoped"), api_keys=KEYS,
              scripts={"hello": HELLO, "claim-one": HELLO})
    yield d
    d.stop()


@pytest.fixture
async def client(scoped: DaemonProcess) -> AsyncIterator[Api]:
    api = Api(scoped)
    yield api
    await api.close()


def _operations() -> list[tuple[str, str, str]]:
    """(method, path with placeholders filled, required scope) of every authenticated route."""
    return [(r.method, r.path.replace("{jobId}", "no-such-job").replace("{reportId}", "0")
             .replace("{name}", "no-such-trigger"), str(r.scope))
            for r in ROUTES.routes if not r.public]


async def _call(api: Api, key: str, method: str, path: str) -> tuple[int, Any]:
    api.key = key
    return await api.request(method, path, json={} if method == "POST" else None)


# -- the route table -------------------------------------------------------------------------

def test_every_route_has_a_scope_unless_public() -> None:
    for r in ROUTES.routes:
        assert r.public or r.scope in (*ALL_SCOPES, ANY_KEY), (r.method, r.path, r.scope)


def test_a_route_without_a_scope_cannot_be_registered() -> None:
    routes = Registry()

    async def handler(request: Any) -> Any:
        raise AssertionError

    with pytest.raises(TypeError, match="needs scope="):
        routes.route("GET", "/v1/x", "x", "X", {200: json_body(Livez, "ok")})(handler)
    with pytest.raises(TypeError, match="unknown scope 'jobs:write'"):
        routes.route("GET", "/v1/x", "x", "X", {200: json_body(Livez, "ok")},
                     scope="jobs:write")(handler)
    with pytest.raises(TypeError, match="public route needs no scope"):
        routes.route("GET", "/v1/x", "x", "X", {200: json_body(Livez, "ok")}, public=True,
                     scope="jobs:read")(handler)


def test_scope_rules() -> None:
    assert grants(["admin"], "jobs:cancel") and grants(["jobs:read"], ANY_KEY)
    assert not grants(["jobs:read"], "jobs:cancel")
    assert effective(["admin"]) == list(ALL_SCOPES)
    assert effective(["metrics:read", "jobs:read"]) == ["jobs:read", "metrics:read"]
    assert script_allowed(["claim-*"], "claim-one") and not script_allowed(["claim-*"], "hello")
    assert not script_allowed(["Claim-*"], "claim-one")  # ids are case-sensitive


@pytest.mark.parametrize(("keys", "where", "reason"), [
    ('scopes = ["jobs:read", "jobs:write"]', "auth.api_keys[0].scopes[1]",
     "must be one of jobs:trigger, jobs:read, jobs:cancel, triggers:manage, reports:manage, "
     "metrics:read, admin; got 'jobs:write'"),
    ("scopes = []", "auth.api_keys[0].scopes", "must not be empty"),
    ('scopes = "admin"', "auth.api_keys[0].scopes", "must be a list of strings, got str"),
    ("scripts = []", "auth.api_keys[0].scripts", "must not be empty"),
    ('scripts = ["a", ""]', "auth.api_keys[0].scripts[1]", "must not be empty"),
    ("scripts = [1]", "auth.api_keys[0].scripts[0]", "must be a string, got int"),
])
def test_config_errors_name_the_key(keys: str, where: str, reason: str) -> None:
    import tomllib

    data = tomllib.loads(_key("k", "x", keys))
    with pytest.raises(ConfigError) as exc:
        parse_config(data, "aftd.toml", base=Path("."))
    assert str(exc.value).startswith(f"aftd.toml: {where}: {reason}"), str(exc.value)


def test_check_config_refuses_an_unknown_scope(tmp_path: Path) -> None:
    cfg = tmp_path / "aftd.toml"
    cfg.write_text(_key("a", "x") + _key("b", "y", 'scopes = ["jobs:read", "root"]'))
    out = subprocess.run([sys.executable, "-m", "aftd.cli.aftd_main", "check-config",
                          "--config", str(cfg)], capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 1
    assert "auth.api_keys[1].scopes[1]: must be one of" in out.stderr + out.stdout


def test_keys_default_to_every_scope_and_script() -> None:
    import tomllib

    cfg = parse_config(tomllib.loads(_key("k", "x")), "aftd.toml", base=Path("."))
    assert cfg.api_keys[0].scopes == ALL_SCOPES and cfg.api_keys[0].scripts == ("*",)


# -- the live daemon --------------------------------------------------------------------------

async def test_every_route_refuses_a_key_without_its_scope(client: Api) -> None:
    for method, path, scope in _operations():
        if scope == ANY_KEY:
            continue
        other = next(s for s in ALL_SCOPES if s not in (scope, "admin"))
        status, body = await _call(client, SCOPED[other], method, path)
        assert status == 403, (method, path, status, body)
        assert body["error"]["code"] == "missing_scope"
        name = other.replace(":", "-")
        assert body["error"]["message"] == f"API key {name!r} lacks scope {scope!r}"


async def test_every_route_serves_a_key_with_its_scope_and_admin(client: Api) -> None:
    for method, path, scope in _operations():
        holders = [SCOPED["admin"], API_KEY] + ([SCOPED[scope]] if scope != ANY_KEY else
                                                [SCOPED["metrics:read"], RO_KEY])
        for key in holders:
            status, body = await _call(client, key, method, path)
            assert status != 403 and status < 500, (method, path, key, status, body)


async def test_the_openapi_document_names_each_routes_scope(client: Api) -> None:
    status, doc = await _call(client, RO_KEY, "GET", "/v1/openapi.json")
    assert status == 200
    for r in ROUTES.routes:
        op = doc["paths"][r.path][r.method.lower()]
        if r.public:
            assert "x-required-scope" not in op and "403" not in op["responses"]
        else:
            assert op["x-required-scope"] == r.scope
            if r.scope != ANY_KEY:
                assert repr(str(r.scope)) in op["responses"]["403"]["description"]


async def test_scripts_globs_limit_what_a_key_triggers(client: Api, scoped: DaemonProcess) -> None:
    client.key = CLAIMS_KEY
    status, job = await client.trigger("claim-one")
    assert status == 201, job
    for body in ({"scriptId": "hello"}, {"scriptName": "HELLO"}):
        status, err = await client.request("POST", "/v1/jobs", json=body)
        assert status == 403, err
        assert err["error"]["code"] == "script_not_allowed"
        assert err["error"]["message"] == ("API key 'claims' may not trigger script 'hello' "
                                           "(its scripts: claim-*)")
    status, listing = await client.request("GET", "/v1/scripts")
    assert {s["scriptId"]: s["triggerable"] for s in listing["scripts"]} == {
        "claim-one": True, "hello": False}
    client.key = RO_KEY  # no jobs:trigger: nothing is triggerable
    status, listing = await client.request("GET", "/v1/scripts")
    assert not any(s["triggerable"] for s in listing["scripts"])
    await scoped.wait_for_log('"api_script_refused"')
    assert CLAIMS_KEY not in scoped.logs()


async def test_me_describes_the_calling_key(client: Api) -> None:
    for key, expected in (
            (RO_KEY, {"name": "ro", "scopes": ["jobs:read"], "scripts": ["*"]}),
            (CLAIMS_KEY, {"name": "claims", "scopes": ["jobs:trigger", "jobs:read"],
                          "scripts": ["claim-*"]}),
            (SCOPED["admin"], {"name": "admin", "scopes": list(ALL_SCOPES), "scripts": ["*"]}),
            (API_KEY, {"name": "test", "scopes": list(ALL_SCOPES), "scripts": ["*"]})):
        client.key = key
        assert await client.request("GET", "/v1/me") == (200, expected)
    client.key = "not-a-key"
    status, _ = await client.request("GET", "/v1/me")
    assert status == 401


async def test_a_read_only_key_cannot_cancel(client: Api) -> None:
    client.key = API_KEY
    status, job = await client.trigger("hello", {"sleep": 30})
    assert status == 201
    try:
        client.key = RO_KEY
        status, err = await client.request("POST", f"/v1/jobs/{job['jobId']}/cancel")
        assert (status, err["error"]["message"]) == (403, "API key 'ro' lacks scope "
                                                          "'jobs:cancel'")
        assert (await client.job(job["jobId"]))["status"] in ("queued", "running")
    finally:
        client.key = API_KEY
        await client.request("POST", f"/v1/jobs/{job['jobId']}/cancel")


def test_scoped_keys_reload_with_sighup(tmp_path: Path) -> None:
    """A reload applies new scopes to the next request."""
    import asyncio
    import signal

    d = spawn(tmp_path, api_keys=_key("k", "the-k", 'scopes = ["jobs:read"]'))
    try:
        async def check() -> None:
            api = Api(d, key="the-k")
            try:
                assert (await api.request("GET", "/metrics"))[0] == 403
                d.write_config("", _key("k", "the-k", 'scopes = ["metrics:read"]'))
                d.signal(signal.SIGHUP)
                await d.wait_for_log('"config_reloaded"', timeout=30)
                assert (await api.request("GET", "/metrics"))[0] == 200
                assert (await api.request("GET", "/v1/jobs"))[0] == 403
            finally:
                await api.close()
        asyncio.run(check())
    finally:
        d.stop()

