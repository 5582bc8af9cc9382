"""Scripts with ``ISOLATION = "process"`` against the real daemon: the whole job API works in
the worker process, and cancels, crashes and exits end only that job.

One daemon serves the module (secrets from a 0600 file, local VFS, an sshd-backed SFTP VFS).
"""

from __future__ import annotations

import asyncio
import json
import os
import textwrap
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiohttp import web

from tests.fixtures.daemon import Api, DaemonProcess, vfs_table
from tests.fixtures.sshd import SshdServer, start_sshd
from tests.fixtures.webapp import serving
from tests.scripts.helpers import (
    daemon_events,
    daemon_strings,
    job_log,
    run_job,
    strings,
    wait_event,
    wait_pid_gone,
)

SECRET = 'iso-S3cret"value\\with-quote'

API = '''
"""Exercise one part of the job API, chosen by the 'what' param."""
import asyncio
import os
import signal
import sys
import time

ISOLATION = "process"


async def main(job):
    what = job.params.require("what")
    job.log.info("worker", pid=os.getpid())
    if what == "params":
        n = job.params.require("n", int)
        job.log.info("params", n=n, keys=sorted(job.params))
        return n
    if what == "secret":
        value = await job.secret("demo-token")
        job.log.info("secret", length=len(value), echo=value)
        print("printed", value)
        import warnings
        warnings.warn("mind the " + value)
        print("to stderr", value, file=sys.stderr)
        raise RuntimeError("failed with " + value)
    if what == "copy":
        src, dst = job.vfs(job.params["src"]), job.vfs(job.params["dst"])
        result = await src.copy_to(job.params["path"], dst, job.params["dir"])
        names = sorted(i.name for i in await dst.listdir(job.params["dir"]))
        info = await dst.stat(job.params["dir"] + "/" + job.params["path"])
        job.log.info("copied", files=result.files, bytes=result.bytes, names=names,
                     size=info.size)
        return 0
    if what == "http":
        async with job.http(job.params["url"], bearer=await job.secret("demo-token")) as http:
            resp = await http.post("/echo", json={"hello": "world"})
        job.log.info("http", status=resp.status, body=resp.json())
        return 0 if resp.ok else 1
    if what == "exit":
        job.exit(job.params.require("code", int))
    if what == "sys_exit":
        sys.exit(job.params.require("code", int))
    if what == "return":
        return job.params["value"]
    if what == "raise":
        raise ValueError("disk on fire")
    if what == "missing":
        return job.params["nope"]
    if what == "sleep":
        try:
            await asyncio.sleep(120)
        finally:
            job.log.info("finally_ran")
    if what == "block":
        time.sleep(float(job.params.get("s", 120)))
        return 0
    if what == "os_exit":
        os._exit(7)
    if what == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    if what == "unknown_vfs":
        job.vfs("nowhere")
    if what == "forge":
        return await forge(job)
    return 99


async def forge(job):
    """Act as a hostile worker: talk to the daemon behind the job API's back."""
    import gc
    from aftd.scripts.worker_api import Channel

    channel = next(o for o in gc.get_objects() if isinstance(o, Channel))
    channel.send({"t": "log", "level": "info", "event": "forged",
                  "fields": {"job_id": job.params["victim"], "note": "mine"}})
    try:
        await channel.call("outbox.record_intent", {
            "job_id": job.params["victim"], "url": "http://127.0.0.1:9/report",
            "token_secret": None, "failure_body": {}, "idempotency_key": "forged"})
    except Exception as exc:
        job.log.info("refused", error=str(exc))
    try:
        await channel.call("outbox.submit", {"report_id": 1, "body": {"status": "completed"}})
    except Exception as exc:
        job.log.info("refused", error=str(exc))
    channel._sock.sendall(b"\\x00\\x00\\x00\\x05hello")
    await asyncio.sleep(60)
'''


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdServer]:
    srv = start_sshd(tmp_path_factory.mktemp("iso-sshd"))
    yield srv
    srv.kill()


@pytest.fixture(scope="module")
def iso(tmp_path_factory: pytest.TempPathFactory, sshd: SshdServer) -> Iterator[DaemonProcess]:
    root = tmp_path_factory.mktemp("iso")
    for name in ("src", "dst"):
        (root / name).mkdir()
    secrets = root / "secrets.toml"
    key = sshd.user_key_text
    secrets.write_text(f"demo-token = {json.dumps(SECRET)}\nsshd-key = '''\n{key}'''\n")
    secrets.chmod(0o600)
    d = DaemonProcess(root / "d", scripts={"api": API}, extra_config=textwrap.dedent(f"""
        [scripts]
        kill_grace_s = 1
        [secrets]
        order = ["file"]
        [secrets.file]
        path = "{secrets}"
        [vfs.src]
        type = "local"
        root = "{root / 'src'}"
        [vfs.dst]
        type = "local"
        root = "{root / 'dst'}"
        """) + vfs_table("partner", sshd.vfs_options()) + "\n")
    asyncio.run(d.start())
    yield d
    d.stop()


@pytest.fixture
async def api(iso: DaemonProcess) -> AsyncIterator[Api]:
    client = Api(iso)
    yield client
    await client.close()


def _event(lines: list[dict[str, Any]], event: str) -> dict[str, Any]:
    return next(line for line in lines if line.get("event") == event)


async def test_params_log_and_exit_codes_in_a_worker(api: Api, iso: DaemonProcess) -> None:
    job = await run_job(api, "api", {"what": "params", "n": 5})
    assert (job["status"], job["exitCode"], job["error"]) == ("failed", 5,
                                                              "script exited with code 5")
    lines = await job_log(api, job["jobId"])
    assert _event(lines, "params")["keys"] == ["n", "what"]
    assert _event(lines, "worker")["pid"] != iso.proc.pid  # type: ignore[union-attr]
    assert (await run_job(api, "api", {"what": "params", "n": 0}))["status"] == "succeeded"
    for what, code in (("exit", 3), ("sys_exit", 4), ("exit", 0)):
        job = await run_job(api, "api", {"what": what, "code": code})
        assert job["exitCode"] == code, job
        assert job["status"] == ("succeeded" if code == 0 else "failed")
    assert (await run_job(api, "api", {"what": "return", "value": True}))["status"] == "succeeded"
    job = await run_job(api, "api", {"what": "return", "value": "text"})
    assert job["status"] == "failed" and "str" in job["error"], job


async def test_errors_are_reported_like_inline_ones(api: Api) -> None:
    job = await run_job(api, "api", {"what": "raise"})
    assert (job["status"], job["error"]) == ("failed", "ValueError: disk on fire")
    exc = _event(await job_log(api, job["jobId"]), "job_exception")
    assert "disk on fire" in exc["traceback"] and "api.py" in exc["traceback"]
    job = await run_job(api, "api", {"what": "missing"})
    assert job["status"] == "failed" and "'nope'" in job["error"], job
    job = await run_job(api, "api", {"what": "params"})
    assert job["status"] == "failed" and "'n'" in job["error"], job
    job = await run_job(api, "api", {"what": "unknown_vfs"})
    assert job["status"] == "failed" and "nowhere" in job["error"], job


async def test_secret_from_the_parent_is_masked_everywhere(api: Api, iso: DaemonProcess) -> None:
    job = await run_job(api, "api", {"what": "secret"})
    assert job["status"] == "failed"
    assert job["error"] == "RuntimeError: failed with ***"
    lines = await job_log(api, job["jobId"])
    assert _event(lines, "secret")["length"] == len(SECRET)
    outputs = [(line["stream"], line["event"]) for line in lines if "stream" in line]
    assert ("stdout", "printed ***") in outputs
    assert ("stderr", "to stderr ***") in outputs
    assert ("warnings", "UserWarning: mind the ***") in outputs
    for text in (*strings(job), *strings(lines), *daemon_strings(iso)):
        assert SECRET not in text


async def test_vfs_copy_local_to_local_and_progress(api: Api, iso: DaemonProcess) -> None:
    src = iso.root.parent / "src"
    (src / "batch.bin").write_bytes(os.urandom(3 << 20))
    (iso.root.parent / "dst" / "in").mkdir(exist_ok=True)
    job = await run_job(api, "api", {"what": "copy", "src": "src", "dst": "dst",
                                     "path": "batch.bin", "dir": "in"})
    assert job["status"] == "succeeded", job
    assert (iso.root.parent / "dst" / "in" / "batch.bin").read_bytes() == \
        (src / "batch.bin").read_bytes()
    copied = _event(await job_log(api, job["jobId"]), "copied")
    assert (copied["files"], copied["bytes"], copied["size"]) == (1, 3 << 20, 3 << 20)
    assert job["progress"]["bytesDone"] == 3 << 20 and job["progress"]["filesDone"] == 1
    status, metrics = await api.request("GET", "/metrics")
    assert status == 200
    assert 'aftd_transfer_files_total{dst_vfs="dst",src_vfs="src"}' in metrics


async def test_vfs_copy_local_to_sftp_with_a_key_from_the_parent(
        api: Api, iso: DaemonProcess, sshd: SshdServer) -> None:
    payload = os.urandom(1 << 20)
    (iso.root.parent / "src" / "up.bin").write_bytes(payload)
    (sshd.root / "inbound").mkdir(exist_ok=True)
    job = await run_job(api, "api", {"what": "copy", "src": "src", "dst": "partner",
                                     "path": "up.bin", "dir": "inbound"})
    assert job["status"] == "succeeded", job
    assert (sshd.root / "inbound" / "up.bin").read_bytes() == payload
    assert _event(await job_log(api, job["jobId"]), "copied")["names"] == ["up.bin"]
    assert "PRIVATE KEY" not in iso.logs()


async def test_http_from_the_worker(api: Api) -> None:
    seen: list[str] = []

    async def echo(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return web.json_response(await request.json())

    app = web.Application()
    app.router.add_post("/echo", echo)
    async with serving(app) as url:
        job = await run_job(api, "api", {"what": "http", "url": url})
    assert job["status"] == "succeeded", job
    assert seen == [f"Bearer {SECRET}"]
    assert _event(await job_log(api, job["jobId"]), "http")["body"] == {"hello": "world"}


async def _started(api: Api, params: dict[str, Any]) -> tuple[str, int]:
    status, body = await api.trigger("api", params)
    assert status == 201, body
    worker = await wait_event(api, body["jobId"], "worker")
    return body["jobId"], int(worker["pid"])


async def test_cancel_mid_sleep_runs_finally_and_ends_the_worker(api: Api) -> None:
    job_id, pid = await _started(api, {"what": "sleep"})
    status, body = await api.request("POST", f"/v1/jobs/{job_id}/cancel")
    assert status == 200, body
    job = await api.wait_job(job_id)
    assert job["status"] == "cancelled", job
    await wait_pid_gone(pid)
    assert any(line["event"] == "finally_ran" for line in await job_log(api, job_id))


async def test_cancel_of_a_blocking_worker_kills_it(api: Api) -> None:
    job_id, pid = await _started(api, {"what": "block", "s": 120})
    status, _ = await api.request("POST", f"/v1/jobs/{job_id}/cancel")
    assert status == 200
    job = await api.wait_job(job_id, timeout=30)
    assert job["status"] == "cancelled", job
    await wait_pid_gone(pid)


@pytest.mark.parametrize(("what", "needle"), [
    ("os_exit", "exited with code 7 before the script finished"),
    ("segv", "killed by signal SIGSEGV"),
])
async def test_a_crashing_worker_fails_only_its_job(api: Api, iso: DaemonProcess, what: str,
                                                    needle: str) -> None:
    job = await run_job(api, "api", {"what": what})
    assert job["status"] == "failed", job
    assert needle in job["error"], job
    if what == "segv":  # faulthandler's dump arrives on the worker's stderr
        lines = await job_log(api, job["jobId"])
        assert any(line.get("stream") == "stderr" and "Segmentation fault" in line["event"]
                   for line in lines), lines
    status, _ = await api.request("GET", "/v1/health")
    assert status == 200
    assert iso.proc is not None and iso.proc.poll() is None
    assert (await run_job(api, "api", {"what": "params", "n": 0}))["status"] == "succeeded"


async def test_a_blocking_worker_does_not_block_the_daemon(api: Api, iso: DaemonProcess) -> None:
    job_id, _ = await _started(api, {"what": "block", "s": 4})
    latencies = []
    loop = asyncio.get_running_loop()
    for _ in range(20):
        started = loop.time()
        status, _ = await api.request("GET", "/v1/health")
        latencies.append(loop.time() - started)
        assert status == 200
        await asyncio.sleep(0.1)
    # Inline, the same script holds every request for up to 4 s (see test_loop_block.py).
    assert max(latencies) < 2.0, latencies
    assert (await api.wait_job(job_id))["status"] == "succeeded"
    assert not [e for e in daemon_events(iso, "event_loop_blocked") if e["job_id"] == job_id]


async def test_a_hostile_worker_cannot_act_for_another_job(api: Api) -> None:
    victim = await run_job(api, "api", {"what": "params", "n": 0})
    job = await run_job(api, "api", {"what": "forge", "victim": victim["jobId"]})
    assert job["status"] == "failed", job
    assert "broke the protocol" in job["error"] and "not valid JSON" in job["error"], job
    lines = await job_log(api, job["jobId"])
    forged = _event(lines, "forged")
    assert forged["note"] == "mine"
    refused = [line["error"] for line in lines if line.get("event") == "refused"]
    assert any("for itself only" in e for e in refused), refused
    assert any("was not recorded by this job" in e for e in refused), refused
    assert "forged" not in str(await job_log(api, victim["jobId"]))
    assert (await api.job(victim["jobId"])).get("report") is None
