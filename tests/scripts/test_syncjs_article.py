"""The reference article's SyncJS script, byte for byte, through every real part: the daemon
process, a real orchestrator HTTP server, secrets (the orchestrator's URL and token, the SSH key)
from an OpenBao dev server, a local VFS and an SFTP VFS on OpenSSH's sshd."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.daemon import Api, DaemonProcess
from tests.fixtures.openbao import OpenBaoServer
from tests.fixtures.orchestrator import Orchestrator
from tests.fixtures.sshd import SshdServer, start_sshd
from tests.scripts.article import COPY, article_script, extract, reference_file
from tests.scripts.helpers import daemon_strings, job_log, run_job, strings

TOKEN = "orch-" + secrets.token_hex(16)
PARAMS = "job_id"


@dataclass
class World:
    daemon: DaemonProcess
    openbao: OpenBaoServer
    prefix: str
    sshd: SshdServer
    local: Path
    vault_token: str


def test_the_script_is_the_articles_byte_for_byte() -> None:
    ref = reference_file()
    if ref is None:
        pytest.skip("the reference article is not beside this checkout")
    assert COPY.read_bytes() == extract(ref.read_bytes())
    assert article_script() == COPY.read_bytes()


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdServer]:
    srv = start_sshd(tmp_path_factory.mktemp("article-sshd"))
    (srv.root / "inbound").mkdir()
    yield srv
    srv.kill()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, sshd: SshdServer,
          openbao: OpenBaoServer) -> Iterator[World]:
    root = tmp_path_factory.mktemp("article")
    prefix = f"aftd-syncjs-{os.getpid()}/"
    openbao.write_kv(f"{prefix}orch-api-token", {"value": TOKEN})
    openbao.write_kv(f"{prefix}sshd-key", {"value": sshd.user_key_text})
    token = openbao.create_token(policies=[openbao.read_policy("aftd-syncjs", prefix=prefix)])
    token_file = root / "vault-token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    local = root / "local"
    local.mkdir()
    sftp = "\n".join(f"{k} = {json.dumps(v)}" for k, v in sshd.vfs_options().items())
    d = DaemonProcess(root / "d", scripts={"article.js": article_script()}, extra_config=f"""
[secrets]
order = ["vault"]
cache_ttl_s = 0
[secrets.vault]
url = "{openbao.url}"
auth = "token"
token_file = "{token_file}"
prefix = "{prefix}"
[vfs.local]
type = "local"
root = "{local}"
[vfs.sftp]
{sftp}
""")
    asyncio.run(d.start())
    yield World(d, openbao, prefix, sshd, local, token)
    d.stop()


@pytest.fixture
async def orch(world: World) -> AsyncIterator[Orchestrator]:
    """A fresh orchestrator per test; its URL reaches the script through GetSecret."""
    o = Orchestrator(token=TOKEN)
    await o.start()
    world.openbao.write_kv(f"{world.prefix}orch-api-url", {"value": o.url})
    yield o
    await o.stop()


@pytest.fixture
async def api(world: World) -> AsyncIterator[Api]:
    client = Api(world.daemon)
    yield client
    await client.close()


async def _run(api: Api, job_id: str | None) -> tuple[dict[str, Any], list[str]]:
    params = [{"name": PARAMS, "value": job_id}] if job_id is not None else []
    job = await run_job(api, "article", params)
    return job, [str(line["event"]) for line in await job_log(api, job["jobId"])]


async def _assert_token_hidden(world: World, api: Api, job: dict[str, Any]) -> None:
    """Neither the orchestrator's token nor the Vault token in any log or job record."""
    seen = [*daemon_strings(world.daemon), *strings(await job_log(api, job["jobId"])),
            *strings(await api.job(job["jobId"]))]
    for value in (TOKEN, world.vault_token):
        assert not [s for s in seen if value in s]


async def test_success_moves_the_file_and_reports_completed_once(
        world: World, orch: Orchestrator, api: Api) -> None:
    payload = os.urandom(300_000)
    (world.local / "batch-7.csv").write_bytes(payload)
    orch.add_job("abc-123", {"sourceVfs": "local", "sourcePath": "batch-7.csv",
                             "destVfs": "sftp", "destDir": "inbound"})
    job, events = await _run(api, "abc-123")
    assert (job["status"], job["exitCode"], job["error"]) == ("succeeded", 0, None), job
    assert (world.sshd.root / "inbound" / "batch-7.csv").read_bytes() == payload
    assert orch.claims("abc-123") == 1
    attempts = orch.report_attempts("abc-123")
    assert [(a.body, a.answered) for a in attempts] == [
        ({"jobId": "abc-123", "status": "completed", "agent": "aft"}, 200)]
    assert orch.state.unauthorized == 0  # both calls carried the bearer token
    assert "transfer complete: batch-7.csv -> sftpinbound" in events
    progress = job["progress"]
    assert (progress["filesDone"], progress["bytesDone"]) == (1, len(payload)), progress
    await _assert_token_hidden(world, api, job)


async def test_missing_source_reports_failed_and_exits_1(
        world: World, orch: Orchestrator, api: Api) -> None:
    orch.add_job("gone-1", {"sourceVfs": "local", "sourcePath": "no-such.csv",
                            "destVfs": "sftp", "destDir": "inbound"})
    job, events = await _run(api, "gone-1")
    assert (job["status"], job["exitCode"]) == ("failed", 1), job
    assert job["error"] == "script exited with code 1"
    assert [a.body for a in orch.report_attempts("gone-1")] == [
        {"jobId": "gone-1", "status": "failed", "agent": "aft"}]
    failed = [e for e in events if e.startswith("transfer failed: ")]
    assert failed and "no-such.csv" in failed[0], events
    assert not (world.sshd.root / "inbound" / "no-such.csv").exists()
    await _assert_token_hidden(world, api, job)


async def test_no_job_id_exits_1_without_a_claim(
        world: World, orch: Orchestrator, api: Api) -> None:
    job, events = await _run(api, None)
    assert (job["status"], job["exitCode"]) == ("failed", 1), job
    assert "job_id parameter is required" in events
    assert sum(orch.state.claims.values()) == 0
    assert orch.report_attempts() == []
    await _assert_token_hidden(world, api, job)


async def test_refused_claim_exits_1_without_a_report(
        world: World, orch: Orchestrator, api: Api) -> None:
    orch.add_job("busy-9", {"error": "database down"}, status=500)
    job, events = await _run(api, "busy-9")
    assert (job["status"], job["exitCode"]) == ("failed", 1), job
    assert orch.claims("busy-9") == 1
    assert "claim failed: HTTP 500" in events
    assert orch.report_attempts() == []
    await _assert_token_hidden(world, api, job)
