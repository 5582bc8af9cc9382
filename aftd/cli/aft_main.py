"""``aft``: trigger and follow jobs on a running aftd over its HTTPS API."""

from __future__ import annotations

import argparse
import json
import math
import os
import queue
import sys
import threading
import time
import urllib.parse
from collections.abc import Sequence
from typing import Any

from aftd import __version__
from aftd.cli.client import ApiClient, ClientError
from aftd.cli.progressbar import ProgressView

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
        s.add_argument("--timeout", type=_seconds, metavar="S",
                       help="fail the job after S seconds (0: no limit; default: the script's "
                            "TIMEOUT_S, else [jobs] timeout_s)")
        if name == "start":
            s.add_argument("--wait", action="store_true",
                           help="wait for the job to end and exit with its exit code")
    for name, helptext in (("status", "show one job"), ("cancel", "cancel a job")):
        s = sub.add_parser(name, parents=[common], help=helptext)
        s.add_argument("job_id", metavar="JOBID")
        if name == "status":
            s.add_argument("--follow", "-f", action="store_true",
                           help="show the job's progress until it ends (a live bar on a "
                                "terminal, plain lines otherwise), then the job; exit with "
                                "its exit code")
    logs = sub.add_parser("logs", parents=[common], help="print a job's log lines")
    logs.add_argument("job_id", metavar="JOBID")
    logs.add_argument("--follow", "-f", action="store_true", help="stream until the job ends")
    jobs = sub.add_parser("jobs", parents=[common], help="list jobs, newest first")
    jobs.add_argument("--status", help="comma-separated states")
    jobs.add_argument("--script", help="script id")
    jobs.add_argument("--trigger", help="only jobs this trigger fired")
    jobs.add_argument("--limit", type=int, default=50)
    jobs.add_argument("--json", action="store_true", help="print the raw JSON answer")
    _trigger_parsers(sub, common)
    return p


def _trigger_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    listing = sub.add_parser("triggers", parents=[common], help="list schedules and watches")
    listing.add_argument("--json", action="store_true", help="print the raw JSON answer")
    # Options go after the action (aft trigger pause NAME --host H), as for other commands.
    trig = sub.add_parser("trigger", help="operate one trigger")
    actions = trig.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, helptext in (("show", "show a trigger with its failed files"),
                             ("pause", "stop firing until resumed"),
                             ("resume", "fire again"),
                             ("run", "fire a schedule now; list a watch's directory now")):
        a = actions.add_parser(action, parents=[common], help=helptext)
        a.add_argument("name", metavar="NAME")
    retry = actions.add_parser("retry", parents=[common],
                               help="fire a watch's failed file again")
    retry.add_argument("name", metavar="NAME")
    retry.add_argument("path", metavar="PATH", help="the file's path relative to the VFS root")


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


def _seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {raw!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {raw!r}")
    return value


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
    if args.timeout is not None:
        body["timeoutS"] = args.timeout
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
    """Trigger, then the job's log on stdout and its progress on stderr until it ends."""
    job = _trigger(client, args)
    print(f"job {job['jobId']} {job['status']}", file=sys.stderr)
    lines: queue.Queue[dict[str, Any] | ClientError | None] = queue.Queue()
    threading.Thread(target=_read_log, args=(client, job["jobId"], lines), daemon=True,
                     name="aft-log").start()
    view = ProgressView(sys.stderr)
    try:
        final = _follow(client, job["jobId"], view, lines)
    finally:
        view.stop()
    view.close(final)
    return _exit_code(final)


def _read_log(client: ApiClient, job_id: str,
              out: queue.Queue[dict[str, Any] | ClientError | None]) -> None:
    """The job's log lines as they come (NDJSON), then None; an error is handed over."""
    try:
        for line in client.stream_lines(f"/v1/jobs/{_q(job_id)}/log?follow=true"):
            out.put(line)
    except ClientError as exc:
        out.put(exc)
    finally:
        out.put(None)


def _follow(client: ApiClient, job_id: str, view: ProgressView,
            lines: queue.Queue[dict[str, Any] | ClientError | None] | None = None
            ) -> dict[str, Any]:
    """Poll the job every POLL_S, showing its progress (and log lines, from ``lines``), until
    it has ended and its log is out; return the final job."""
    log_done = lines is None
    while True:
        job: dict[str, Any] = client.call("GET", f"/v1/jobs/{_q(job_id)}")
        view.update(job)
        next_poll = time.monotonic() + POLL_S
        while lines is not None and not log_done:
            try:
                item = lines.get(timeout=max(0.0, next_poll - time.monotonic()))
            except queue.Empty:
                break
            if isinstance(item, ClientError):
                raise item
            if item is None:
                log_done = True
            else:
                view.line(json.dumps(item), sys.stdout)
        if job["status"] in TERMINAL and log_done:
            return job
        time.sleep(max(0.0, next_poll - time.monotonic()))


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
    if not args.follow:
        _print(client.call("GET", f"/v1/jobs/{_q(args.job_id)}"))
        return 0
    view = ProgressView(sys.stderr)
    try:
        final = _follow(client, args.job_id, view)
    finally:
        view.stop()
    view.close(final)
    _print(final)
    return _exit_code(final)


def _cmd_cancel(client: ApiClient, args: argparse.Namespace) -> int:
    _print(client.call("POST", f"/v1/jobs/{_q(args.job_id)}/cancel"))
    return 0


def _cmd_logs(client: ApiClient, args: argparse.Namespace) -> int:
    path = f"/v1/jobs/{_q(args.job_id)}/log"
    if args.follow:
        for line in client.stream_lines(path + "?follow=true"):
            print(json.dumps(line), flush=True)
        return 0
    after: int | None = 0
    while after is not None:  # a page ends at the daemon's byte budget; nextAfter continues
        page = client.call("GET", f"{path}?after={after}")
        for line in page["lines"]:
            print(json.dumps(line))
        after = page.get("nextAfter")
    return 0


def _cmd_jobs(client: ApiClient, args: argparse.Namespace) -> int:
    query = {k: v for k, v in (("status", args.status), ("script", args.script),
                               ("trigger", args.trigger), ("limit", str(args.limit))) if v}
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


def _cmd_triggers(client: ApiClient, args: argparse.Namespace) -> int:
    page = client.call("GET", "/v1/triggers")
    if args.json:
        _print(page)
        return 0
    print(f"{'NAME':24}  {'TYPE':8}  {'STATE':7}  {'PENDING':>7}  {'FAILED':>6}  "
          f"{'LAST FIRED':24}  NEXT FIRE")
    for t in page["triggers"]:
        print(f"{t['name'][:24]:24}  {t['type']:8}  {t['state']:7}  {t['pendingFiles']:>7}  "
              f"{t['failedCount']:>6}  {t['lastFiredAt'] or '-':24}  {t['nextFireAt'] or '-'}")
        if t["lastError"]:
            print(f"  error: {t['lastError']}")
    return 0


def _cmd_trigger(client: ApiClient, args: argparse.Namespace) -> int:
    path = f"/v1/triggers/{_q(args.name)}"
    if args.action == "show":
        _print(client.call("GET", path))
    elif args.action == "retry":
        _print(client.call("POST", f"{path}/retry", {"path": args.path}))
    else:
        _print(client.call("POST", f"{path}/{args.action}"))
    return 0


def _q(job_id: str) -> str:
    return urllib.parse.quote(job_id, safe="")


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2))


_COMMANDS = {"start": _cmd_start, "run": _cmd_run, "status": _cmd_status,
             "cancel": _cmd_cancel, "logs": _cmd_logs, "jobs": _cmd_jobs,
             "triggers": _cmd_triggers, "trigger": _cmd_trigger}


if __name__ == "__main__":
    sys.exit(main())
