"""The ``aft`` and ``aftd`` command lines, run as real processes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.daemon import API_KEY, DaemonProcess


@pytest.fixture
def daemon(module_daemon: DaemonProcess) -> DaemonProcess:
    """One daemon for the module's tests that only start jobs of their own and read them."""
    return module_daemon

SLOW = "import asyncio\nasync def main(job):\n    await asyncio.sleep(30)\n"


async def aft(d: DaemonProcess, *args: str, key: str | None = API_KEY,
              env: dict[str, str] | None = None, trust: bool = True) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "AFT_API_KEY"}
    if trust:
        base["AFTD_STATE_DIR"] = str(d.state_dir)  # "the daemon's own host" for this daemon
    argv = [sys.executable, "-m", "aftd.cli.aft_main", args[0], "--host", f"127.0.0.1:{d.port}"]
    if key:
        argv += ["--apikey", key]
    argv += list(args[1:])
    return await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True,
                                   timeout=60, env={**base, **(env or {})})


async def test_start_with_both_param_forms_and_status(daemon: DaemonProcess) -> None:
    r = await aft(daemon, "start", "--scriptid", "hello", "--params",
                  '[{"name":"name","value":"list"}]')
    assert r.returncode == 0, r.stderr
    job = json.loads(r.stdout)
    assert job["params"] == {"name": "list"}
    r = await aft(daemon, "start", "--scriptname", "HELLO", "--params", '{"name":"flat"}', "--wait")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["status"] == "succeeded"
    r = await aft(daemon, "status", job["jobId"])
    assert r.returncode == 0
    assert json.loads(r.stdout)["jobId"] == job["jobId"]


async def test_wait_exits_with_the_job_exit_code(daemon: DaemonProcess) -> None:
    r = await aft(daemon, "start", "--scriptid", "hello", "--params", '{"exit_code": 4}', "--wait")
    assert r.returncode == 4
    assert json.loads(r.stdout)["status"] == "failed"


async def test_key_from_environment_and_jobs_logs_cancel(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d: DaemonProcess = await make_daemon(scripts={"hello": "async def main(job):\n"
                                                  "    job.log.info('hi')\n", "slow": SLOW})
    r = await aft(d, "start", "--scriptid", "hello", "--wait", key=None,
                  env={"AFT_API_KEY": API_KEY})
    assert r.returncode == 0, r.stderr
    job_id = json.loads(r.stdout)["jobId"]
    r = await aft(d, "jobs")
    assert r.returncode == 0 and job_id in r.stdout
    r = await aft(d, "logs", job_id)
    assert r.returncode == 0
    assert "hi" in [json.loads(line)["event"] for line in r.stdout.splitlines()]
    r = await aft(d, "logs", job_id, "--follow")
    assert r.returncode == 0 and "job_finished" in r.stdout
    slow = json.loads((await aft(d, "start", "--scriptid", "slow")).stdout)["jobId"]
    r = await aft(d, "cancel", slow)
    assert r.returncode == 0
    assert json.loads(r.stdout)["status"] == "cancelled"


async def test_errors_are_plain_and_nonzero(daemon: DaemonProcess) -> None:
    r = await aft(daemon, "start", "--scriptid", "nope")
    assert r.returncode != 0
    assert "unknown script id 'nope'" in r.stderr
    assert "Traceback" not in r.stderr
    r = await aft(daemon, "status", "x", key="wrong")
    assert r.returncode != 0 and "invalid API key" in r.stderr
    r = await aft(daemon, "start", "--scriptid", "hello", "--params", "{bad")
    assert r.returncode != 0 and "--params is not valid JSON" in r.stderr


async def test_tls_trust_options(daemon: DaemonProcess) -> None:
    r = await aft(daemon, "jobs", trust=False, env={"AFTD_STATE_DIR": "/nonexistent"})
    assert r.returncode != 0 and "certificate" in r.stderr
    r = await aft(daemon, "jobs", "--cacert", str(daemon.cert), trust=False,
                  env={"AFTD_STATE_DIR": "/nonexistent"})
    assert r.returncode == 0, r.stderr
    r = await aft(daemon, "jobs", "--insecure", trust=False, env={"AFTD_STATE_DIR": "/nonexistent"})
    assert r.returncode == 0, r.stderr


def _aftd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "aftd.cli.aftd_main", *args],
                          capture_output=True, text=True, timeout=60)


def test_check_config_names_file_key_and_reason(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[jobs]\nmax_concurrent = "eight"\n')
    r = _aftd("check-config", "--config", str(bad))
    assert r.returncode != 0
    assert str(bad) in r.stderr and "jobs.max_concurrent" in r.stderr and "integer" in r.stderr
    bad.write_text("[server]\nlisten = \"127.0.0.1:1\"\nbogus = 1\n")
    r = _aftd("check-config", "--config", str(bad))
    assert r.returncode != 0 and "server.bogus" in r.stderr and "unknown key" in r.stderr
    good = tmp_path / "good.toml"
    good.write_text('[jobs]\nmax_concurrent = 8\n')
    r = _aftd("check-config", "--config", str(good))
    assert r.returncode == 0, r.stderr


def test_gen_apikey_prints_key_and_matching_digest() -> None:
    import hashlib

    r = _aftd("gen-apikey")
    assert r.returncode == 0
    key = next(line.split(": ")[1] for line in r.stdout.splitlines() if line.startswith("API key"))
    digest = next(line.split(": ")[1] for line in r.stdout.splitlines()
                  if line.startswith("SHA-256"))
    assert hashlib.sha256(key.encode()).hexdigest() == digest


def test_secrets_check_names_provider_without_values(tmp_path: Path) -> None:
    cfg = tmp_path / "aftd.toml"
    cfg.write_text('[secrets]\norder = ["env"]\n')
    env = {**os.environ, "AFTD_SECRET_ORCH_API_TOKEN": "tok-value-secret-xyz"}
    r = subprocess.run([sys.executable, "-m", "aftd", "secrets", "check", "--config", str(cfg),
                        "orch-api-token", "not-there"], capture_output=True, text=True,
                       timeout=60, env=env)
    assert r.returncode == 1
    out = r.stdout + r.stderr
    assert "orch-api-token" in out and "env" in out
    assert "not-there" in out
    assert "tok-value-secret-xyz" not in out
