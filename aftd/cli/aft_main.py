"""``aft``: trigger and follow jobs on a running aftd over its HTTPS API."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.parse
from collections.abc import Sequence
from typing import Any

from aftd import __version__
from aftd.cli.client import ApiClient, ClientError

__all__ = ["main"]

DEFAULT_HOST = "127.0.0.1:44399"
POLL_S = 0.5
TERMINAL = {"succeeded", "failed", "cancelled", "interrupted"}


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--host", default=os.environ.get("AFT_HOST", DEFAULT_HOST),
                        help=f"daemon HOST:PORT (default {DEFAULT_HOST}, or $AFT_HOST)")
    common.add_argument("--apikey", default=os.environ.get("AFT_API_KEY"),
                        help="API key (default $AFT_API_KEY)")
    common.add_argument("--cacert", metavar="FILE", help="CA/certificate file to trust")
    common.add_argument("--insecure", action="store_true", help="do not verify TLS (testing)")
    p = argparse.ArgumentParser(prog="aft", description="Trigger and follow aftd jobs.")
    p.add_argument("--version", action="version", version=f"aft {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, helptext in (("start", "trigger a script as a job"),
                           ("run", "trigger a job, stream its log, exit with its exit code")):
        s = sub.add_parser(name, parents=[common], help=helptext)
        which = s.add_mutually_exclusive_group(required=True)
        which.add_argument("--scriptid", help="script id (file stem)")
        which.add_argument("--scriptname", help="script name (case-insensitive)")
        s.add_argument("--params", default=None,
                       help='JSON: [{"name":"k","value":"v"}] or {"k":"v"}')
        s.add_argument("--idempotency-key", help="retries with the same key return the same job")
        if name == "start":
            s.add_argument("--wait", action="store_true",
                           help="wait for the job to end and exit with its exit code")
    for name, helptext in (("status", "show one job"), ("cancel", "cancel a job")):
        s = sub.add_parser(name, parents=[common], help=helptext)
        s.add_argument("job_id", metavar="JOBID")
    logs = sub.add_parser("logs", parents=[common], help="print a job's log lines")
    logs.add_argument("job_id", metavar="JOBID")
    logs.add_argument("--follow", "-f", action="store_true", help="stream until the job ends")
    jobs = sub.add_parser("jobs", parents=[common], help="list jobs, newest first")
    jobs.add_argument("--status", help="comma-separated states")
    jobs.add_argument("--script", help="script id")
    jobs.add_argument("--limit", type=int, default=50)
    jobs.add_argument("--json", action="store_true", help="print the raw JSON answer")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        client = ApiClient(args.host, args.apikey, cacert=args.cacert, insecure=args.insecure)
        return int(_COMMANDS[args.command](client, args))
    except ClientError as exc:
        print(f"aft: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _params(raw: str | None) -> Any:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ClientError(f"--params is not valid JSON: {exc}") from None
    if not isinstance(value, list | dict):
        raise ClientError('--params must be a JSON list of {"name","value"} objects or an object')
    return value


def _trigger(client: ApiClient, args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = ({"scriptId": args.scriptid} if args.scriptid
                            else {"scriptName": args.scriptname})
    params = _params(args.params)
    if params is not None:
        body["params"] = params
    headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else None
    job: dict[str, Any] = client.call("POST", "/v1/jobs", body, headers)
    return job


def _cmd_start(client: ApiClient, args: argparse.Namespace) -> int:
    job = _trigger(client, args)
    if not args.wait:
        _print(job)
        return 0
    print(f"job {job['jobId']} {job['status']}", file=sys.stderr)
    final = _wait(client, job["jobId"])
    _print(final)
    return _exit_code(final)


def _cmd_run(client: ApiClient, args: argparse.Namespace) -> int:
    job = _trigger(client, args)
    print(f"job {job['jobId']} {job['status']}", file=sys.stderr)
    for line in client.stream_lines(f"/v1/jobs/{_q(job['jobId'])}/log?follow=true"):
        print(json.dumps(line), flush=True)
    final = _wait(client, job["jobId"])
    print(f"job {final['jobId']} {final['status']}"
          + (f": {final['error']}" if final.get("error") else ""), file=sys.stderr)
    return _exit_code(final)


def _wait(client: ApiClient, job_id: str) -> dict[str, Any]:
    while True:
        job: dict[str, Any] = client.call("GET", f"/v1/jobs/{_q(job_id)}")
        if job["status"] in TERMINAL:
            return job
        time.sleep(POLL_S)


def _exit_code(job: dict[str, Any]) -> int:
    if job["status"] == "succeeded":
        return 0
    code = job.get("exitCode")
    return code if isinstance(code, int) and 0 < code < 256 else 1


def _cmd_status(client: ApiClient, args: argparse.Namespace) -> int:
    _print(client.call("GET", f"/v1/jobs/{_q(args.job_id)}"))
    return 0


def _cmd_cancel(client: ApiClient, args: argparse.Namespace) -> int:
    _print(client.call("POST", f"/v1/jobs/{_q(args.job_id)}/cancel"))
    return 0


def _cmd_logs(client: ApiClient, args: argparse.Namespace) -> int:
    path = f"/v1/jobs/{_q(args.job_id)}/log"
    if args.follow:
        for line in client.stream_lines(path + "?follow=true"):
            print(json.dumps(line), flush=True)
        return 0
    for line in client.call("GET", path)["lines"]:
        print(json.dumps(line))
    return 0


def _cmd_jobs(client: ApiClient, args: argparse.Namespace) -> int:
    query = {k: v for k, v in (("status", args.status), ("script", args.script),
                               ("limit", str(args.limit))) if v}
    page = client.call("GET", "/v1/jobs?" + urllib.parse.urlencode(query))
    if args.json:
        _print(page)
        return 0
    print(f"{'JOB ID':36}  {'SCRIPT':24}  {'STATUS':11}  {'EXIT':>4}  CREATED")
    for j in page["jobs"]:
        code = "" if j["exitCode"] is None else str(j["exitCode"])
        print(f"{j['jobId']:36}  {j['scriptId'][:24]:24}  {j['status']:11}  {code:>4}  "
              f"{j['createdAt']}")
    return 0


def _q(job_id: str) -> str:
    return urllib.parse.quote(job_id, safe="")


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2))


_COMMANDS = {"start": _cmd_start, "run": _cmd_run, "status": _cmd_status,
             "cancel": _cmd_cancel, "logs": _cmd_logs, "jobs": _cmd_jobs}


if __name__ == "__main__":
    sys.exit(main())
