"""Secrets through the real daemon: Vault-backed jobs, redaction everywhere, Vault outages."""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from tests.fixtures.daemon import Api, DaemonProcess
from tests.fixtures.openbao import OpenBaoServer
from tests.fixtures.webapp import serving

LEAKY = '''
import urllib.parse

async def main(job):
    token = await job.secret("orch-api-token")
    url = await job.secret("echo-url")
    job.log.info("plain", value=token)
    job.log.info("in_url", url=f"https://user:{urllib.parse.quote(token)}@example.net/x")
    async with job.http(url) as http:
        resp = await http.post("/echo", json={"token": token})
        job.log.info("echoed", body=resp.text)
    raise RuntimeError(f"upstream said {resp.text} for token {token}")
'''

NEEDS = '''
async def main(job):
    await job.secret("orch-api-token")
    return 0
'''

SECRET = "Zx9-very-secret/Token+value=="


@pytest.fixture
async def echo_url() -> AsyncIterator[str]:
    async def echo(request: web.Request) -> web.Response:
        return web.Response(text=await request.text())

    app = web.Application()
    app.router.add_post("/echo", echo)
    async with serving(app) as url:
        yield url


def _vault_config(bao: OpenBaoServer, token_file: Path) -> str:
    token_file.write_text(bao.token)
    token_file.chmod(0o600)
    return f"""
[secrets]
order = ["vault"]
cache_ttl_s = 0.5
[secrets.vault]
url = "{bao.url}"
auth = "token"
token_file = "{token_file}"
mount = "secret"
prefix = "aftd/"
timeout_s = 2
"""


async def test_no_secret_value_leaks_anywhere(make_daemon, openbao_private: OpenBaoServer,  # type: ignore[no-untyped-def]
                                              echo_url: str, tmp_path: Path) -> None:
    bao = openbao_private
    bao.write_kv("aftd/orch-api-token", {"value": SECRET})
    bao.write_kv("aftd/echo-url", {"value": echo_url})
    d: DaemonProcess = await make_daemon(scripts={"leaky": LEAKY},
                                         extra_config=_vault_config(bao, tmp_path / "tok"))
    api = Api(d)
    captured: list[str] = []
    try:
        status, body = await api.trigger("leaky")
        assert status == 201, body
        captured.append(str(body))
        job = await api.wait_job(body["jobId"])
        assert job["status"] == "failed"
        assert "upstream said" in job["error"]
        for path in (f"/v1/jobs/{job['jobId']}", f"/v1/jobs/{job['jobId']}/log", "/v1/jobs"):
            captured.append(str(await api.request("GET", path)))
        _, log = await api.request("GET", f"/v1/jobs/{job['jobId']}/log")
        events = {line["event"]: line for line in log["lines"]}
        assert events["plain"]["value"] == "***"
        assert "***" in events["echoed"]["body"]
    finally:
        await api.close()
    d.stop()
    captured.append(d.logs())
    text = "\n".join(captured)
    for form in (SECRET, urllib.parse.quote(SECRET), urllib.parse.quote(SECRET, safe=""),
                 urllib.parse.quote_plus(SECRET), bao.token):
        assert form not in text, f"secret form {form!r} leaked"


async def test_rotation_and_vault_outage(make_daemon, openbao_private: OpenBaoServer,  # type: ignore[no-untyped-def]
                                         tmp_path: Path) -> None:
    bao = openbao_private
    bao.write_kv("aftd/orch-api-token", {"value": "first-value-1234"})
    d: DaemonProcess = await make_daemon(scripts={"needs": NEEDS},
                                         extra_config=_vault_config(bao, tmp_path / "tok"))
    api = Api(d)
    try:
        _, body = await api.trigger("needs")
        assert (await api.wait_job(body["jobId"]))["status"] == "succeeded"
        bao.stop()
        import asyncio

        await asyncio.sleep(0.6)  # past cache_ttl_s
        _, body = await api.trigger("needs")
        job = await api.wait_job(body["jobId"])
        assert job["status"] == "failed"
        assert "orch-api-token" in job["error"]
        assert "first-value-1234" not in str(job)
        status, health = await api.request("GET", "/v1/health")
        assert (status, health["status"]) == (200, "ok")  # the daemon keeps serving
        bao.restart()
        bao.write_kv("aftd/orch-api-token", {"value": "second-value-5678"})
        _, body = await api.trigger("needs")
        assert (await api.wait_job(body["jobId"]))["status"] == "succeeded"
    finally:
        await api.close()
