"""Claim → transfer → report benchmark: N concurrent workflows through the real daemon.

    python bench/workflow_bench.py [--runs 3] [--n 100 1000] [--file-kib 4]
                                   [--max-concurrent 64] [--phases]

(``BENCH_DEST=src`` copies local→local instead of local→SFTP, to separate SFTP costs.)

Everything is local: a private OpenSSH sshd (tests/fixtures/sshd.py) as the SFTP destination,
the orchestrator HTTP server of the tests (tests/fixtures/orchestrator.py) in this process, and
the daemon as its own process (tests/fixtures/daemon.py) triggered over its HTTPS API. Each
workflow claims its own orchestrator job, copies one small local file to SFTP and reports.

Printed per N: workflows/s (first trigger sent → last report accepted), p50/p99 end-to-end
latency (trigger sent → report accepted), daemon CPU seconds per workflow (from /proc, the
daemon only), daemon peak RSS (VmHWM), and the check that matters most: claims, distinct
reports and duplicate deliveries. With ``--runs R`` every run starts fresh servers and a fresh
daemon; the summary gives the median and range (min-max) of each figure over the runs, the
ratios to the targets (1,000 workflows ≥ 200/s with p99 < 3 s, 100 workflows ≥ 150/s, peak RSS
< 300 MB) and the load average before and after.

``--phases`` logs at ``info`` instead of ``warning`` (which costs the daemon some CPU of its
own) and splits each workflow's latency into phases from the daemon's log timestamps: the API
(trigger sent → ``job_queued``), the queue (→ ``job_started``), secrets and the intent's commit
(→ ``report_intent_recorded``), the claim request (→ ``job_claimed``), the copy (→
``transfer_completed``), the report's commit (→ ``report_submitted``) and delivery (→
``report_delivered``, the outbox's POST and the commit that marks it delivered); p50/p99 each.
Shared, noisy 2-core machine: expect ±20% between runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.fixtures.daemon import Api, DaemonProcess  # noqa: E402
from tests.fixtures.orchestrator import Orchestrator  # noqa: E402
from tests.fixtures.sshd import SshdServer, start_sshd  # noqa: E402

SCRIPT = (REPO / "aftd" / "examples" / "scripts" / "claim_transfer_report.py").read_text()
DEST = os.environ.get("BENCH_DEST", "partner")
CLK_TCK = os.sysconf("SC_CLK_TCK")


class ReusingApi(Api):
    """The test client, but with one TLS context so connections are reused: a new context per
    request (the fixture's default) opens a new TLS connection each time, and every idle
    connection holds ~256 KiB in the daemon (asyncio's SSL buffer) until keep-alive expires."""

    def __init__(self, daemon: DaemonProcess) -> None:
        super().__init__(daemon)
        ctx = daemon.ssl_context()
        daemon.ssl_context = lambda: ctx  # type: ignore[method-assign]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def config(src: Path, sshd: SshdServer, max_concurrent: int, level: str) -> str:
    opts = sshd.vfs_options()
    partner = "\n".join(f'{k} = {v}' if isinstance(v, int) else f'{k} = "{v}"'
                        for k, v in opts.items())
    return f"""
[logging]
level = "{level}"
[jobs]
max_concurrent = {max_concurrent}
[vfs.src]
type = "local"
root = "{src}"
[vfs.partner]
{partner}
"""


# (phase name, the daemon log event that ends it); the first phase starts at the trigger.
PHASES = (("api", "job_queued"), ("queue", "job_started"),
          ("secrets+intent", "report_intent_recorded"), ("claim", "job_claimed"),
          ("copy", "transfer_completed"), ("report commit", "report_submitted"),
          ("delivery", "report_delivered"))
TARGETS = {1000: (200.0, 3000.0), 100: (150.0, None)}  # N: (workflows/s, p99 ms)
RSS_TARGET_MB = 300.0
TRIGGERS_IN_FLIGHT = 100  # the orchestrator's requests in flight at once


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def phase_times(log_path: Path, jobs: dict[str, float]) -> dict[str, list[float]]:
    """Per phase, each workflow's time in ms, from the daemon's JSON log; ``jobs`` maps the
    daemon's job id to the wall-clock time its trigger was sent."""
    seen: dict[str, dict[str, float]] = {j: {} for j in jobs}
    wanted = {event for _, event in PHASES}
    for line in log_path.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        event, job_id = entry.get("event"), entry.get("job_id")
        if event in wanted and job_id in seen:
            at = datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp()
            seen[job_id].setdefault(event, at)
    out: dict[str, list[float]] = {name: [] for name, _ in PHASES}
    for job_id, events in seen.items():
        before = jobs[job_id]
        for name, event in PHASES:
            if event not in events:
                break
            out[name].append(1000 * (events[event] - before))
            before = events[event]
    return out


async def run_batch(api: Api, orch: Orchestrator, src: Path, tag: str, n: int,
                    file_kib: int, pid: int) -> dict[str, Any]:
    names = [f"{tag}-{i}" for i in range(n)]
    data = os.urandom(file_kib * 1024)
    for name in names:
        (src / f"{name}.dat").write_bytes(data)
        orch.add_job(name, {"sourceVfs": "src", "sourcePath": f"{name}.dat",
                            "destVfs": DEST, "destDir": "inbound"})
    sent: dict[str, float] = {}
    sent_wall: dict[str, float] = {}  # the daemon's job id -> wall clock at trigger
    limit = asyncio.Semaphore(TRIGGERS_IN_FLIGHT)

    async def trigger(name: str) -> None:
        async with limit:
            sent[name] = time.monotonic()
            wall = time.time()
            status, body = await api.trigger("claim_transfer_report",
                                             [{"name": "job_id", "value": name}])
            if status != 201:
                raise RuntimeError(f"trigger {name}: {status} {body}")
            sent_wall[body["jobId"]] = wall

    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    await asyncio.gather(*(trigger(name) for name in names))
    for name in names:
        await orch.wait_reports(name, timeout=600)
    wall = time.monotonic() - t0
    cpu = cpu_seconds(pid) - cpu0
    first = {}
    for a in orch.report_attempts():
        if a.answered == 200 and a.job_id in sent:
            first.setdefault(a.job_id, a.at)
    lat = sorted(first[name] - sent[name] for name in names)
    await asyncio.sleep(1.0)  # late duplicates, if any, would arrive now
    return {
        "n": n, "wall_s": wall, "wf_per_s": n / wall,
        "p50_ms": 1000 * statistics.median(lat), "p99_ms": 1000 * pct(lat, 0.99),
        "cpu_per_wf_ms": 1000 * cpu / n, "rss_mb": peak_rss_mb(pid),
        "claims": sum(orch.claims(name) for name in names),
        "reports": sum(len(orch.reports(name)) for name in names),
        "accepted": sum(1 for a in orch.report_attempts() if a.job_id in sent
                        and a.answered == 200),
        "completed": sum(orch.reports(name) == [{"jobId": name, "status": "completed",
                                                 "agent": "aftd"}] for name in names),
        "jobs": sent_wall,
    }


HEADER = (f"{'N':>6} {'wf/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms/wf':>10} "
          f"{'RSS MB':>7} {'claims':>7} {'reports':>8} {'accepted':>9} {'completed':>9}")


def row(r: dict[str, Any]) -> str:
    return (f"{r['n']:>6} {r['wf_per_s']:>8.1f} {r['p50_ms']:>8.0f} {r['p99_ms']:>8.0f} "
            f"{r['cpu_per_wf_ms']:>10.1f} {r['rss_mb']:>7.0f} {r['claims']:>7} "
            f"{r['reports']:>8} {r['accepted']:>9} {r['completed']:>9}")


def print_phases(daemon: DaemonProcess, r: dict[str, Any]) -> None:
    times = phase_times(daemon.log_path, r["jobs"])
    print("        phase (ms):  " + "  ".join(
        f"{name} {statistics.median(v):.0f}/{pct(v, 0.99):.0f}" if v else f"{name} -"
        for name, v in times.items()) + "   (p50/p99)", flush=True)


async def one_run(ns: list[int], file_kib: int, max_concurrent: int,
                  phases: bool) -> tuple[list[dict[str, Any]], bool]:
    with tempfile.TemporaryDirectory(prefix="aftd-wfbench-") as tmp:
        root = Path(tmp)
        sshd = start_sshd(root / "sshd")
        (sshd.root / "inbound").mkdir(exist_ok=True)
        orch = Orchestrator()
        await orch.start()
        src = root / "src"
        src.mkdir()
        level = "info" if phases else "warning"
        daemon = DaemonProcess(root / "daemon",
                               extra_config=config(src, sshd, max_concurrent, level),
                               env={"AFTD_SECRET_ORCH_API_URL": orch.url,
                                    "AFTD_SECRET_ORCH_API_TOKEN": orch.token,
                                    "AFTD_SECRET_SSHD_KEY": sshd.user_key_text},
                               scripts={"claim_transfer_report": SCRIPT})
        await daemon.start()
        api = ReusingApi(daemon)
        ok, results = True, []
        try:
            assert daemon.proc is not None
            pid = daemon.proc.pid
            # As many as the triggers in flight: the client's pool then holds its 100 TLS
            # connections, as a long-running orchestrator's would; the batches measure
            # workflows, not TLS handshakes.
            await run_batch(api, orch, src, "warmup", TRIGGERS_IN_FLIGHT, file_kib, pid)
            print(HEADER)
            for i, n in enumerate(ns):
                r = await run_batch(api, orch, src, f"b{i}n{n}", n, file_kib, pid)
                print(row(r), flush=True)
                if phases:
                    print_phases(daemon, r)
                ok &= r["claims"] == r["reports"] == r["accepted"] == r["completed"] == n
                results.append(r)
        finally:
            await api.close()
            daemon.stop()
            await orch.stop()
            sshd.kill()
        return results, ok


def spread(values: list[float], spec: str = ".0f") -> str:
    return f"{statistics.median(values):{spec}} ({min(values):{spec}}-{max(values):{spec}})"


def summary(runs: list[list[dict[str, Any]]], ns: list[int], loads: list[str]) -> None:
    print(f"\nmedian (range) over {len(runs)} runs; load average {' -> '.join(loads)}")
    print(f"{'N':>6}  {'wf/s':<18} {'p50 ms':<18} {'p99 ms':<20} {'CPU ms/wf':<16} RSS MB")
    for i, n in enumerate(ns):
        rs = [run[i] for run in runs]
        col = {k: [r[k] for r in rs] for k in ("wf_per_s", "p50_ms", "p99_ms",
                                                "cpu_per_wf_ms", "rss_mb")}
        print(f"{n:>6}  {spread(col['wf_per_s'], '.1f'):<18} {spread(col['p50_ms']):<18} "
              f"{spread(col['p99_ms']):<20} {spread(col['cpu_per_wf_ms'], '.1f'):<16} "
              f"{spread(col['rss_mb'])}")
        rate, p99 = TARGETS.get(n, (None, None))
        notes = []
        if rate is not None:
            notes.append(f"wf/s {statistics.median(col['wf_per_s']) / rate:.2f}x of {rate:.0f}")
        if p99 is not None:
            notes.append(f"p99 {statistics.median(col['p99_ms']) / p99:.2f}x of {p99:.0f} ms"
                         " (< 1 meets it)")
        notes.append(f"peak RSS {max(col['rss_mb']) / RSS_TARGET_MB:.2f}x of "
                     f"{RSS_TARGET_MB:.0f} MB")
        print(f"{'':>8}target ratios: {', '.join(notes)}")


def load_average() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


async def main(ns: list[int], file_kib: int, max_concurrent: int, runs: int,
               phases: bool) -> int:
    loads, results, ok = [load_average()], [], True
    for i in range(runs):
        print(f"-- run {i + 1}/{runs} (load average {load_average()})", flush=True)
        rs, good = await one_run(ns, file_kib, max_concurrent, phases)
        results.append(rs)
        ok &= good
    loads.append(load_average())
    summary(results, ns, loads)
    print("zero lost, zero duplicated" if ok else "LOST OR DUPLICATED REPORTS")
    return 0 if ok else 1


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--n", type=int, nargs="+", default=[100, 1000])
    p.add_argument("--file-kib", type=int, default=4)
    p.add_argument("--max-concurrent", type=int, default=64)
    p.add_argument("--phases", action="store_true",
                   help="log at info and split the latency into phases (costs some CPU)")
    a = p.parse_args()
    sys.exit(asyncio.run(main(a.n, a.file_kib, a.max_concurrent, a.runs, a.phases)))
