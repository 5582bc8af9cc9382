"""Operations against the live daemon: sd_notify sequence, SIGHUP reload, /metrics, retention."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import signal
import subprocess
import time

import pytest

from tests.conftest import HELLO
from tests.fixtures.daemon import Api, DaemonProcess
from tests.ops.conftest import NotifyReceiver


async def _until(rx: NotifyReceiver, key: str, timeout: float = 15.0) -> list[dict[str, str]]:
    """Messages received up to and including the first one carrying ``key``."""
    seen: list[dict[str, str]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = await rx.next_message(timeout=deadline - time.monotonic())
        seen.append(msg)
        if key in msg:
            return seen
    raise AssertionError(f"no {key} in {seen}")


async def test_sd_notify_sequence(make_daemon, notify_path: NotifyReceiver) -> None:  # type: ignore[no-untyped-def]
    d: DaemonProcess = await make_daemon(start=False, env=notify_path.env(WATCHDOG_USEC="400000"))
    await d.start()
    ready = (await _until(notify_path, "READY"))[-1]
    assert ready["READY"] == "1"
    assert "running" in ready.get("STATUS", "")
    await _until(notify_path, "WATCHDOG")
    await _until(notify_path, "WATCHDOG")  # pings keep coming from the event loop
    d.signal(signal.SIGHUP)
    reload_msgs = await _until(notify_path, "RELOADING")
    assert "MONOTONIC_USEC" in reload_msgs[-1]
    assert (await _until(notify_path, "READY"))[-1]["READY"] == "1"
    d.signal(signal.SIGTERM)
    await _until(notify_path, "STOPPING")
    assert await d.wait_exit() == 0


async def test_sighup_reload_good_and_bad_config(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d: DaemonProcess = await make_daemon()
    api = Api(d)
    try:
        new_scripts = d.root / "scripts2"
        new_scripts.mkdir()
        (new_scripts / "second.py").write_text("async def main(job):\n    return 0\n")
        new_key = "reloaded-key-abcdefghijklmnopqrstuvwxyz"
        text = d.config_path.read_text().replace(str(d.scripts_dir), str(new_scripts))
        text += f'\n[[auth.api_keys]]\nname = "new"\nsha256 = "{hashlib.sha256(new_key.encode()).hexdigest()}"\n'
        d.config_path.write_text(text)
        d.signal(signal.SIGHUP)
        await d.wait_for_log("config_reloaded")
        status, body = await api.trigger("second")
        assert status == 201, body
        assert (await api.wait_job(body["jobId"]))["status"] == "succeeded"
        assert (await api.trigger("hello"))[0] == 404  # the old scripts dir is gone
        new_api = Api(d, key=new_key)
        assert (await new_api.request("GET", "/v1/jobs"))[0] == 200
        await new_api.close()

        d.config_path.write_text(text + "\n[jobs]\nmax_concurrent = -5\n")
        d.signal(signal.SIGHUP)
        await d.wait_for_log("reload_refused")
        assert "jobs.max_concurrent" in d.logs()
        assert (await api.trigger("second"))[0] == 201  # old config still in force
    finally:
        await api.close()


COPY = """
async def main(job):
    await job.vfs("a").copy_to(job.params["path"], job.vfs("b"), "/")
"""


async def test_live_metrics_pass_promtool(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    src, dst = tmp_path / "a", tmp_path / "b"
    src.mkdir()
    dst.mkdir()
    (src / "f.bin").write_bytes(b"x" * 1000)
    d: DaemonProcess = await make_daemon(
        scripts={"hello": HELLO, "copy": COPY},
        extra_config=f'[vfs.a]\ntype = "local"\nroot = "{src}"\n'
                     f'[vfs.b]\ntype = "local"\nroot = "{dst}"\n')
    api = Api(d)
    try:
        for code in (0, 0, 3):
            _, body = await api.trigger("hello", {"exit_code": code})
            await api.wait_job(body["jobId"])
        for path in ("f.bin", "missing.bin"):
            _, body = await api.trigger("copy", {"path": path})
            await api.wait_job(body["jobId"])
        await api.request("GET", "/v1/jobs/nope")
        status, text = await api.request("GET", "/metrics")
        assert status == 200
        assert 'aftd_jobs_finished_total{script="hello",state="succeeded"} 2.0' in text
        assert 'aftd_jobs{state="failed"} 2.0' in text  # exit code 3 and the missing file
        assert 'route="/v1/jobs/{jobId}"' in text
        assert 'aftd_transfer_bytes_total{dst_vfs="b",src_vfs="a"} 1000.0' in text
        assert 'aftd_transfer_files_total{dst_vfs="b",src_vfs="a"} 1.0' in text
        assert 'aftd_transfer_errors_total{dst_vfs="b",src_vfs="a"} 1.0' in text
        anon = Api(d, key=None)
        assert (await anon.request("GET", "/metrics"))[0] == 401
        await anon.close()
    finally:
        await api.close()
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is required in CI (apt-get install prometheus)")
        pytest.skip("promtool not installed")
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr


async def test_retention_prunes_old_jobs(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d: DaemonProcess = await make_daemon()
    api = Api(d)
    _, body = await api.trigger("hello")
    await api.wait_job(body["jobId"])
    await api.close()
    d.stop()
    # 0.00002 days is under two seconds: the finished job is past retention at the next start.
    d.config_path.write_text(d.config_path.read_text() + "\n[jobs]\nretention_days = 0.00002\n")
    await asyncio.sleep(2)
    await d.start()
    api = Api(d)
    try:
        # The prune runs just after the daemon starts listening: poll, bounded.
        deadline = time.monotonic() + 30
        while (status := (await api.request("GET", f"/v1/jobs/{body['jobId']}"))[0]) != 404 \
                and time.monotonic() < deadline:
            assert status == 200
            await asyncio.sleep(0.1)
        assert status == 404
    finally:
        await api.close()
