"""Start-up and shutdown of the real daemon: one daemon per state dir, a failed start changes
nothing, one ``startup_failed`` line for any cause, bounded shutdown, absolute config path."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.daemon import Api, DaemonProcess
from tests.fixtures.diskfull import fill

SLOW = '''
import asyncio
async def main(job):
    await asyncio.sleep(float(job.params.get("sleep", 60)))
'''

STUBBORN = '''
import asyncio
async def main(job):
    while True:
        try:
            await asyncio.sleep(1)
        except asyncio.CancelledError:
            job.log.warning("ignoring cancel")
'''

CHDIR = '''
import os
async def main(job):
    os.chdir("/")
'''


def _snapshot(state_dir: Path) -> tuple[list[Any], list[Any]]:
    """Every job and report row, read without changing anything."""
    uri = f"file:{state_dir / 'aftd.sqlite'}?mode=ro"
    with sqlite3.connect(uri, uri=True) as c:
        jobs = c.execute("SELECT id, status, started_at, finished_at, error FROM jobs "
                         "ORDER BY seq").fetchall()
        reports = c.execute("SELECT * FROM report_outbox ORDER BY id").fetchall()
    return jobs, reports


def _run_serve(config: Path, *, cwd: Path | None = None, timeout: float = 60,
               config_arg: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aftd.cli.aftd_main", "serve", "--config",
         config_arg or str(config)], capture_output=True, text=True, timeout=timeout,
        cwd=cwd, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})


def _startup_failed(out: str) -> dict[str, Any]:
    """The one startup_failed line; no traceback anywhere."""
    assert "Traceback" not in out, out
    lines = [json.loads(line) for line in out.splitlines() if '"startup_failed"' in line]
    assert len(lines) == 1, out
    return lines[0]


async def _running_and_queued(d: DaemonProcess, api: Api) -> tuple[str, str]:
    _, running = await api.trigger("slow", {"sleep": "30"})
    _, queued = await api.trigger("slow", {"sleep": "0"})
    await api.wait_job(running["jobId"], ("running",))
    # The API answers from memory; the store is written a moment later (group commit). The
    # callers compare or keep the stored rows, so wait until the store shows both jobs.
    deadline = time.monotonic() + 30
    while [row[1] for row in _snapshot(d.state_dir)[0]] != ["running", "queued"]:
        assert time.monotonic() < deadline, _snapshot(d.state_dir)
        await asyncio.sleep(0.05)
    return running["jobId"], queued["jobId"]


@pytest.mark.slow
async def test_second_daemon_on_the_same_state_dir_is_refused_and_changes_nothing(
        make_daemon, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    first: DaemonProcess = await make_daemon(scripts={"slow": SLOW},
                                             extra_config="[jobs]\nmax_concurrent = 1\n")
    api = Api(first)
    try:
        running, queued = await _running_and_queued(first, api)
        before = _snapshot(first.state_dir)
        # Same config (same port) and a copy on a free port: the lock refuses both at once.
        other = tmp_path / "other.toml"
        other.write_text(first.config_path.read_text().replace(
            f"127.0.0.1:{first.port}", "127.0.0.1:1"))
        for config in (first.config_path, other):
            # Refused without waiting for the lock: _run_serve's timeout bounds the run.
            result = _run_serve(config)
            assert result.returncode != 0
            line = _startup_failed(result.stdout + result.stderr)
            assert str(first.state_dir) in line["error"]
            assert f"pid {first.proc.pid}" in line["error"], line  # type: ignore[union-attr]
        assert _snapshot(first.state_dir) == before
        assert (await api.job(running))["status"] == "running"
        assert (await api.job(queued))["status"] == "queued"
        await api.request("POST", f"/v1/jobs/{running}/cancel")
        assert (await api.wait_job(queued))["status"] == "succeeded"
    finally:
        await api.close()
    assert (first.state_dir / "aftd.lock").read_text().strip() == str(first.proc.pid)  # type: ignore[union-attr]


async def _killed_with_work_left(make_daemon) -> tuple[DaemonProcess, str, str]:  # type: ignore[no-untyped-def]
    d: DaemonProcess = await make_daemon(scripts={"slow": SLOW},
                                         extra_config="[jobs]\nmax_concurrent = 1\n")
    api = Api(d)
    try:
        running, queued = await _running_and_queued(d, api)
    finally:
        await api.close()
    d.kill9()
    return d, running, queued


@pytest.mark.slow
async def test_port_in_use_fails_before_any_state_changes(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d, running, queued = await _killed_with_work_left(make_daemon)
    before = _snapshot(d.state_dir)
    assert [r[1] for r in before[0]] == ["running", "queued"]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", d.port))
        busy.listen()
        result = _run_serve(d.config_path)
    assert result.returncode != 0
    assert "cannot listen" in _startup_failed(result.stdout)["error"]
    assert _snapshot(d.state_dir) == before  # not marked interrupted, queued job not run
    await d.start()
    api = Api(d)
    try:
        assert (await api.job(running))["status"] == "interrupted"
        assert (await api.wait_job(queued))["status"] == "succeeded"
    finally:
        await api.close()


@pytest.mark.slow
async def test_bad_certificate_fails_before_any_state_changes(make_daemon, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    d, _, _ = await _killed_with_work_left(make_daemon)
    before = _snapshot(d.state_dir)
    bad_cert = tmp_path / "bad.pem"
    bad_cert.write_text("not a certificate\n")
    config = tmp_path / "badcert.toml"
    config.write_text(d.config_path.read_text().replace(
        "[server]\n", f'[server]\ntls_cert = "{bad_cert}"\ntls_key = "{bad_cert}"\n'))
    result = _run_serve(config)
    assert result.returncode != 0
    assert str(bad_cert) in _startup_failed(result.stdout)["error"]
    assert _snapshot(d.state_dir) == before


@pytest.mark.parametrize("case", ["state_dir_is_a_file", "config_missing", "bad_config"])
def test_startup_failures_end_in_one_line(tmp_path: Path, case: str) -> None:
    config = tmp_path / "aftd.toml"
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    text = {"state_dir_is_a_file": f'[paths]\nstate_dir = "{blocker}/state"\n',
            "bad_config": "[jobs]\ntimeout_s = -1\n"}.get(case)
    if text is not None:
        config.write_text(f'[server]\nlisten = "127.0.0.1:1"\n{text}')
    result = _run_serve(config)
    assert result.returncode != 0
    line = _startup_failed(result.stdout + result.stderr)
    expected = {"state_dir_is_a_file": "Not a directory", "config_missing": "cannot read",
                "bad_config": "jobs.timeout_s"}[case]
    assert expected in line["error"], line


def test_full_disk_at_start_is_one_line(tiny_fs: Path, tmp_path: Path) -> None:
    fill(tiny_fs)
    config = tmp_path / "aftd.toml"
    config.write_text(f'[server]\nlisten = "127.0.0.1:1"\n[paths]\nstate_dir = "{tiny_fs}/s"\n')
    result = _run_serve(config)
    assert result.returncode != 0
    line = _startup_failed(result.stdout + result.stderr)
    assert "No space left on device" in line["error"] or "disk is full" in line["error"], line


@pytest.mark.slow
async def test_job_ignoring_cancel_cannot_hold_shutdown(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d: DaemonProcess = await make_daemon(scripts={"stubborn": STUBBORN},
                                         extra_config="[jobs]\nshutdown_grace_s = 0.5\n")
    api = Api(d)
    try:
        _, job = await api.trigger("stubborn")
        await api.wait_job(job["jobId"], ("running",))
    finally:
        await api.close()
    d.signal(signal.SIGTERM)
    # grace 0.5 s + the fixed 10 s cancel wait + bounded steps: well under TimeoutStopSec.
    assert await d.wait_exit(timeout=60) == 0
    assert '"job_ignored_cancel"' in d.logs()
    await d.start()
    api = Api(d)
    try:
        final = await api.job(job["jobId"])
        assert final["status"] == "interrupted"
        assert "did not stop" in final["error"]
    finally:
        await api.close()


async def test_relative_config_survives_a_scripts_chdir(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d: DaemonProcess = await make_daemon(scripts={"chdir": CHDIR}, start=False)
    logf = d.log_path.open("ab")
    d.proc = subprocess.Popen(
        [sys.executable, "-m", "aftd.cli.aftd_main", "serve", "--config", d.config_path.name],
        cwd=d.root, stdout=logf, stderr=subprocess.STDOUT,
        env={**d.env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    logf.close()
    await d.wait_ready(60)
    api = Api(d)
    try:
        _, job = await api.trigger("chdir")
        assert (await api.wait_job(job["jobId"]))["status"] == "succeeded"
        d.signal(signal.SIGHUP)
        await d.wait_for_log('"config_reloaded"')
        assert '"reload_refused"' not in d.logs()
    finally:
        await api.close()


async def test_idempotency_distinguishes_json_types(api: Api) -> None:
    key = {"Idempotency-Key": "typed-1"}
    status, first = await api.trigger("hello", {"n": 1}, headers=key)
    assert status == 201
    for other in (1.0, True, "1"):
        status, err = await api.trigger("hello", {"n": other}, headers=key)
        assert status == 409, (other, err)
    status, again = await api.trigger("hello", {"n": 1}, headers=key)
    assert status == 200 and again["jobId"] == first["jobId"]


async def test_cached_counts_match_the_store(make_daemon) -> None:  # type: ignore[no-untyped-def]
    """Health and metrics answer from counts kept in memory; they agree with the database."""
    d: DaemonProcess = await make_daemon(
        scripts={"slow": SLOW},
        extra_config="[jobs]\nmax_concurrent = 1\nshutdown_grace_s = 0.5\n")
    api = Api(d)
    try:
        await _running_and_queued(d, api)
        _, done = await api.trigger("slow", {"sleep": "0"})
        await api.request("POST", f"/v1/jobs/{done['jobId']}/cancel")
        status, health = await api.request("GET", "/v1/health")
        assert status == 200 and health["jobs"] == {"running": 1, "queued": 1}
        expected = {"running": 1, "queued": 1, "cancelled": 1}
        # The cancel is stored a moment after it answered; the counts follow each write.
        deadline = time.monotonic() + 30
        while True:
            _, text = await api.request("GET", "/metrics")
            with sqlite3.connect(f"file:{d.state_dir / 'aftd.sqlite'}?mode=ro", uri=True) as c:
                stored = dict(c.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status"))
            shown = all(f'aftd_jobs{{state="{state}"}} {float(n)}' in text
                        for state, n in expected.items())
            if stored == expected and shown:
                break
            assert time.monotonic() < deadline, (stored, text)
            await asyncio.sleep(0.05)
    finally:
        await api.close()
