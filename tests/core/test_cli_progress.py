"""``aft run`` and ``aft status JOBID --follow`` show a job's progress: a live bar (bytes, rate,
ETA) redrawn in place on a terminal (a real pty), plain lines when the output is a pipe."""

from __future__ import annotations

import asyncio
import io
import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from typing import Any

import pytest

from aftd.cli.progressbar import ProgressView, eta_text, human_bytes, progress_text
from tests.fixtures.daemon import API_KEY, Api, DaemonProcess

# Eight MiB in four steps, a log line each: a job that moves for a few seconds.
MOVER = """
import asyncio
from aftd.progress import current

async def main(job):
    sink = current()
    total = 8 * 1024 * 1024
    sink.add_total(files=4, nbytes=total)
    for i in range(4):
        await asyncio.sleep(float(job.params.get("step", 0.8)))
        sink.advance(files=1, nbytes=total // 4)
        job.log.info("file_done", n=i)
    return int(job.params.get("exit_code", 0))
"""
ESC = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _argv(d: DaemonProcess, *args: str) -> list[str]:
    return [sys.executable, "-m", "aftd.cli.aft_main", args[0], "--host", f"127.0.0.1:{d.port}",
            "--apikey", API_KEY, "--cacert", str(d.cert), *args[1:]]


def _in_pty(argv: list[str], timeout: float = 90.0) -> tuple[int, str]:
    """Run ``argv`` with stdout and stderr on a pseudo-terminal; its exit code and output."""
    master, slave = pty.openpty()
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "160"}
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        return proc.wait(timeout=10), out.decode(errors="replace")
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()


@pytest.fixture
async def mover(make_daemon: Any) -> DaemonProcess:
    d: DaemonProcess = await make_daemon(scripts={"mover": MOVER})
    return d


def _log_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


async def test_run_draws_a_live_bar_on_a_terminal(mover: DaemonProcess) -> None:
    code, out = await asyncio.to_thread(_in_pty, _argv(mover, "run", "--scriptid", "mover"))
    assert code == 0, out
    # Redrawn in place: carriage return and erase-line, a bar, bytes of the total, rate, ETA.
    assert "\r\x1b[K" in out
    frames = [ESC.sub("", f) for f in out.split("\r\x1b[K") if "/s" in f]
    assert any(re.search(r"^\[#+-*\] +\d+% +[\d.]+ MiB / 8\.0 MiB +[\d.]+ [KM]iB/s +ETA \d+:\d\d"
                         r" +\d/4 files", f) for f in frames), frames
    # The job's log lines reached the terminal whole, each on a line of its own.
    events = [e["event"] for e in _log_lines(ESC.sub("", out.replace("\r", "\n")))]
    assert events.count("file_done") == 4, out
    assert re.search(r"job [0-9a-f-]{36} succeeded: 8\.0 MiB in 4 files, [\d.]+ s", out)


async def test_run_prints_plain_lines_when_not_a_terminal(mover: DaemonProcess) -> None:
    r = await asyncio.to_thread(subprocess.run, _argv(mover, "run", "--scriptid", "mover",
                                                      "--params", '{"exit_code": 3}'),
                                capture_output=True, text=True, timeout=90)
    assert r.returncode == 3, r.stderr
    assert "\r" not in r.stderr + r.stdout and "\x1b" not in r.stderr + r.stdout
    progress = [line for line in r.stderr.splitlines() if line.startswith("progress: ")]
    assert progress and all(re.fullmatch(r"progress: \w+ +\S.*", p) for p in progress), r.stderr
    assert re.search(r"job [0-9a-f-]{36} failed: 8\.0 MiB in 4 files", r.stderr), r.stderr
    # stdout is the log, nothing else: one JSON object a line.
    lines = r.stdout.splitlines()
    assert [json.loads(line)["event"] for line in lines].count("file_done") == 4


async def test_status_follow_shows_progress_then_the_job(mover: DaemonProcess) -> None:
    api = Api(mover)
    try:
        status, job = await api.trigger("mover", {"exit_code": 5})
        assert status == 201
        code, out = await asyncio.to_thread(_in_pty, _argv(mover, "status", job["jobId"],
                                                           "--follow"))
        assert code == 5, out
        assert "\r\x1b[K" in out and "MiB/s" in out
        final = json.loads(out[out.index("{"):])
        assert (final["jobId"], final["status"]) == (job["jobId"], "failed")
        # Without a terminal: plain lines, then the same JSON.
        r = await asyncio.to_thread(subprocess.run, _argv(mover, "status", job["jobId"], "-f"),
                                    capture_output=True, text=True, timeout=60)
        assert r.returncode == 5 and "\x1b" not in r.stderr
        assert json.loads(r.stdout)["status"] == "failed"
        assert f"job {job['jobId']} failed" in r.stderr
    finally:
        await api.close()


# -- the view without a daemon ----------------------------------------------------------------

def _job(done: int, total: int, status: str = "running", rate: float = 1 << 20) -> dict[str, Any]:
    return {"jobId": "0123456789abcdef", "status": status, "progress": {
        "bytesDone": done, "bytesTotal": total, "filesDone": 1, "filesTotal": 4,
        "bytesPerSecond": rate}}


def test_figures() -> None:
    assert progress_text(_job(1 << 20, 4 << 20)) == \
        " 25%  1.0 MiB / 4.0 MiB  1.0 MiB/s  ETA 0:03  1/4 files"
    assert progress_text(_job(5, 0, rate=0)) == "5 B  0 B/s  1/4 files"
    assert "ETA ?" in progress_text(_job(0, 10, rate=0))
    assert eta_text(3725) == "1:02:05" and eta_text(float("inf")) == "?"
    assert human_bytes(3 * 1024**3) == "3.0 GiB"


def test_the_bar_is_lifted_for_log_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    err, out = io.StringIO(), io.StringIO()
    view = ProgressView(err, tty=True)
    view.update(_job(2 << 20, 4 << 20))
    assert err.getvalue() == \
        "\r\x1b[K[##########----------]  50%  2.0 MiB / 4.0 MiB  1.0 MiB/s  ETA 0:02  1/4 files"
    view.line('{"event": "x"}', out)
    assert out.getvalue() == '{"event": "x"}\n'
    # lifted (erased) before the line, drawn again after it
    assert err.getvalue().count("\r\x1b[K") == 3 and err.getvalue().endswith("1/4 files")
    view.update(_job(0, 4 << 20, status="queued"))
    assert err.getvalue().endswith("\r\x1b[Kqueued [--------------------]   0%  0 B / 4.0 MiB  "
                                   "1.0 MiB/s  1/4 files")
    monkeypatch.setenv("COLUMNS", "60")  # too narrow for the bar: the figures stay
    view.update(_job(2 << 20, 4 << 20))
    assert err.getvalue().endswith("\r\x1b[K 50%  2.0 MiB / 4.0 MiB  1.0 MiB/s  ETA 0:02  1/4 files")
    view.stop()
    assert err.getvalue().endswith("\r\x1b[K")


def test_plain_lines_are_throttled() -> None:
    now = [0.0]
    err = io.StringIO()
    view = ProgressView(err, tty=False, clock=lambda: now[0], plain_interval_s=2.0)
    view.update(_job(1, 4))
    view.update(_job(2, 4))  # too soon
    now[0] = 3.0
    view.update(_job(2, 4))
    view.update(_job(2, 4))  # unchanged
    assert err.getvalue().count("progress: ") == 2 and "\r" not in err.getvalue()
