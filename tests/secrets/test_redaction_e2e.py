"""A hostile secret (backslash, quotes, non-ASCII) through the real daemon, from a secrets file
and from OpenBao: scripts log it inside every kind of value, print it, warn with it, exit with
it and raise it; no form of it reaches the daemon's output, the stored job log, the job record
or the job list, and the script's output lands in its job log."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest

from tests.fixtures.daemon import Api, DaemonProcess
from tests.fixtures.openbao import OpenBaoServer

LEAKY = '''
import dataclasses, json, logging, sys, urllib.parse, warnings
import yarl


@dataclasses.dataclass
class Creds:
    user: str
    password: str


async def main(job):
    s = await job.secret("hostile")
    mode = job.params["mode"]
    log = job.log
    if mode == "values":
        log.error("as_exception", error=RuntimeError(s))
        log.info("as_bytes", value=s.encode())
        log.info("as_url", url=yarl.URL.build(scheme="https", user="u", password=s,
                                              host="h.example", path="/x", query={"t": s}))
        log.info("as_tuple", value=("a", s))
        log.info("as_dataclass", value=Creds("u", s))
        log.info("as_nested", value={"a": [{"b": (s, {s: s})}]})
        log.info("as_percent_r %r", {"s": s})
        log.info(f"as_fstring {({'s': s})}")
        log.info("as_json", body=json.dumps({"s": s}))
        log.info("as_quoted", a=urllib.parse.quote(s), b=urllib.parse.quote(s, safe=""),
                 c=urllib.parse.quote_plus(s))
        log.info("as_bytes_repr", text=repr(s.encode()))
        try:
            raise ValueError(s)
        except ValueError:
            log.exception("as_traceback")
        logging.getLogger("script.stdlib").warning("stdlib-marker %r %s", {"s": s}, s)
        print("print-marker", s, repr(s))
        sys.stderr.write(f"stderr-marker {s!r}\\n")
        warnings.warn(f"warn-marker {s}")
        return 0
    if mode == "exit":
        job.exit(s)
    if mode == "keyerror":
        raise KeyError(s)
    if mode == "valueerror_bytes":
        raise ValueError(s.encode())
    raise RuntimeError(f"unknown mode {mode}")
'''

MODES = ("values", "exit", "keyerror", "valueerror_bytes")


def hostile_secret() -> tuple[str, str]:
    """A secret with a backslash, both quotes and non-ASCII characters, and a unique tail that
    every escaped form keeps (so searching for the tail finds any form that leaked)."""
    tail = uuid.uuid4().hex
    return f'Hx\\q"T\'ü€😀 /+=&-{tail}', tail


def forms(s: str) -> list[str]:
    return [s, repr(s)[1:-1], ascii(s)[1:-1], repr(s.encode())[2:-1], json.dumps(s)[1:-1],
            json.dumps(s, ensure_ascii=False)[1:-1], quote(s), quote(s, safe=""), quote_plus(s)]


async def run_all_modes(d: DaemonProcess) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Trigger one job per mode; return the final records and every API answer's text."""
    api = Api(d)
    captured: list[str] = []
    try:
        ids = {}
        for mode in MODES:
            status, body = await api.trigger("leaky", {"mode": mode})
            assert status == 201, body
            ids[mode] = body["jobId"]
        jobs = {m: await api.wait_job(i) for m, i in ids.items()}
        for job_id in ids.values():
            for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/log"):
                status, body = await api.request("GET", path)
                assert status == 200, body
                captured.append(json.dumps(body, ensure_ascii=False))
        status, body = await api.request("GET", "/v1/jobs?limit=100")
        captured.append(json.dumps(body, ensure_ascii=False))
        for mode, job_id in ids.items():
            _, log = await api.request("GET", f"/v1/jobs/{job_id}/log")
            jobs[mode]["lines"] = log["lines"]
    finally:
        await api.close()
    return jobs, captured


def check(jobs: dict[str, dict[str, Any]], captured: list[str], daemon_output: str,
          secret: str, tail: str, *extra_secrets: str) -> None:
    assert jobs["values"]["status"] == "succeeded", jobs["values"]
    events = [str(line["event"]) for line in jobs["values"]["lines"]]
    for marker in ("as_exception", "as_url", "as_traceback", "stdlib-marker", "print-marker",
                   "stderr-marker", "warn-marker"):
        assert any(marker in e for e in events), (marker, events)
    printed = next(line for line in jobs["values"]["lines"] if "print-marker" in line["event"])
    assert printed["stream"] == "stdout"
    assert printed["event"] == "print-marker *** '***'"
    for mode in ("exit", "keyerror", "valueerror_bytes"):
        assert jobs[mode]["status"] == "failed"
        assert "***" in jobs[mode]["error"], jobs[mode]
    assert jobs["keyerror"]["error"] == "KeyError: '***'"
    assert jobs["valueerror_bytes"]["error"] == "ValueError: b'***'"
    texts = {"api": "\n".join(captured), "daemon output": daemon_output}
    for where, text in texts.items():
        assert tail not in text, f"the secret leaked into the {where}"
        for form in (*forms(secret), *extra_secrets):
            assert form not in text, f"{form!r} leaked into the {where}"


async def test_hostile_secret_from_a_file_never_leaks(make_daemon: Callable[..., Any],
                                                     tmp_path: Path) -> None:
    secret, tail = hostile_secret()
    secrets_file = tmp_path / "secrets.toml"
    # A TOML basic string: JSON's escapes of '"' and '\\' are valid TOML.
    secrets_file.write_text(f"hostile = {json.dumps(secret, ensure_ascii=False)}\n",
                            encoding="utf-8")
    secrets_file.chmod(0o600)
    d: DaemonProcess = await make_daemon(scripts={"leaky": LEAKY}, extra_config=f"""
        [secrets]
        order = ["file"]
        [secrets.file]
        path = "{secrets_file}"
    """)
    jobs, captured = await run_all_modes(d)
    d.stop()
    check(jobs, captured, d.logs(), secret, tail)


async def test_hostile_secret_from_openbao_never_leaks(make_daemon: Callable[..., Any],
                                                      openbao: OpenBaoServer,
                                                      tmp_path: Path) -> None:
    secret, tail = hostile_secret()
    prefix = f"redact-{uuid.uuid4().hex[:8]}/"
    openbao.write_kv(f"{prefix}hostile", {"value": secret})
    token_file = tmp_path / "token"
    token_file.write_text(openbao.token)
    token_file.chmod(0o600)
    d: DaemonProcess = await make_daemon(scripts={"leaky": LEAKY}, extra_config=f"""
        [secrets]
        order = ["vault"]
        [secrets.vault]
        url = "{openbao.url}"
        auth = "token"
        token_file = "{token_file}"
        prefix = "{prefix}"
    """)
    jobs, captured = await run_all_modes(d)
    d.stop()
    check(jobs, captured, d.logs(), secret, tail, openbao.token)


@pytest.mark.parametrize("where", ["print", "stderr", "warning"])
async def test_script_output_lands_in_the_job_log_not_raw_on_stdout(
        make_daemon: Callable[..., Any], where: str) -> None:
    marker = f"out-{uuid.uuid4().hex}"
    statement = {"print": f"print({marker!r})",
                 "stderr": f"sys.stderr.write({marker!r} + '\\n')",
                 "warning": f"warnings.warn({marker!r})"}[where]
    d: DaemonProcess = await make_daemon(scripts={"talk": f"""
import sys, warnings

async def main(job):
    {statement}
"""})
    api = Api(d)
    try:
        _, body = await api.trigger("talk")
        job = await api.wait_job(body["jobId"])
        assert job["status"] == "succeeded"
        _, log = await api.request("GET", f"/v1/jobs/{job['jobId']}/log")
    finally:
        await api.close()
    line = next(line for line in log["lines"] if marker in line["event"])
    assert line["stream"] == {"print": "stdout", "stderr": "stderr", "warning": "warnings"}[where]
    d.stop()
    # On the daemon's output the line shows only as a JSON log line of the job, never raw.
    raw = [ln for ln in d.logs().splitlines() if marker in ln]
    assert raw
    for ln in raw:
        assert json.loads(ln)["job_id"] == job["jobId"]
