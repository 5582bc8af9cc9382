"""What process isolation costs per job: a trivial script inline vs ``ISOLATION = "process"``.

    python bench/isolation_bench.py [--runs 3] [--n 100] [--seq 30] [--start-method spawn]

The daemon runs as its own process (tests/fixtures/daemon.py), triggered over HTTPS. Per run
and per mode:

* sequential: ``--seq`` jobs one after another; the job's own run time (``startedAt`` →
  ``finishedAt``, measured by the daemon) and the client's trigger → final state time, as
  p50/p99; "added" is process minus inline.
* burst: ``--n`` jobs triggered at once; jobs/s from the first ``createdAt`` to the last
  ``finishedAt``; the daemon's own CPU seconds per job (workers not included).
* one isolated job reports its worker's memory from /proc: RSS, PSS (shared pages split among
  the processes sharing them) and USS (pages only it has), the last being what each extra
  worker costs.

Medians over ``--runs`` runs, with the range. ``--start-method spawn`` makes the daemon start a
fresh interpreter per job instead of forking from its forkserver (AFTD_WORKER_START_METHOD).
Shared, noisy 2-core machine: compare the modes of one run, and expect ±20% between runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.jobtiming import (  # noqa: E402
    burst,
    job_daemon,
    pct,
    print_medians,
    sequential,
    wait_done,
)
from tests.fixtures.daemon import Api, DaemonProcess  # noqa: E402

TRIVIAL = "async def main(job):\n    return 0\n"
MEMORY = '''
ISOLATION = "process"


def _kib(path, key):
    for line in open(path):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


async def main(job):
    rollup = "/proc/self/smaps_rollup"
    uss = _kib(rollup, "Private_Clean") + _kib(rollup, "Private_Dirty")
    job.log.warning("memory", rss_kib=_kib("/proc/self/status", "VmRSS"),
                    pss_kib=_kib(rollup, "Pss"), uss_kib=uss)
    return 0
'''
SCRIPTS = {"inline": TRIVIAL, "process": 'ISOLATION = "process"\n' + TRIVIAL, "memory": MEMORY}
CLK_TCK = os.sysconf("SC_CLK_TCK")
def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


async def burst_cpu(api: Api, d: DaemonProcess, script: str, n: int) -> tuple[float, float]:
    """Jobs/s of a burst, and the daemon's CPU seconds per job."""
    assert d.proc is not None
    cpu0 = cpu_seconds(d.proc.pid)
    rate = await burst(api, script, n)
    return rate, (cpu_seconds(d.proc.pid) - cpu0) / n


async def memory(api: Api) -> dict[str, float]:
    status, body = await api.trigger("memory")
    assert status == 201, body
    await wait_done(api, body["jobId"])
    _, log = await api.request("GET", f"/v1/jobs/{body['jobId']}/log")
    line = next(x for x in log["lines"] if x["event"] == "memory")
    return {k: line[f"{k}_kib"] / 1024 for k in ("rss", "pss", "uss")}


async def one_run(args: argparse.Namespace, root: Path) -> dict[str, float]:
    env = {"AFTD_WORKER_START_METHOD": args.start_method} if args.start_method else {}
    out: dict[str, float] = {}
    async with job_daemon(root, SCRIPTS, max_concurrent=args.max_concurrent,
                          max_workers=args.max_workers, env=env) as (d, api):
        await sequential(api, "process", 3)  # warm up: forkserver, imports, TLS
        for mode in ("inline", "process"):
            own, e2e = await sequential(api, mode, args.seq)
            out[f"{mode} job p50 ms"], out[f"{mode} job p99 ms"] = \
                pct(own, 0.5) * 1e3, pct(own, 0.99) * 1e3
            out[f"{mode} e2e p50 ms"], out[f"{mode} e2e p99 ms"] = \
                pct(e2e, 0.5) * 1e3, pct(e2e, 0.99) * 1e3
            out[f"{mode} jobs/s"], out[f"{mode} daemon CPU ms/job"] = \
                await burst_cpu(api, d, mode, args.n)
            out[f"{mode} daemon CPU ms/job"] *= 1e3
        for k in ("job p50 ms", "job p99 ms", "e2e p50 ms", "e2e p99 ms"):
            out[f"added {k}"] = out[f"process {k}"] - out[f"inline {k}"]
        out.update({f"worker {k} MB": v for k, v in (await memory(api)).items()})
    return out


def report(runs: list[dict[str, float]]) -> None:
    print_medians(runs)
    inline = statistics.median(r["inline jobs/s"] for r in runs)
    process = statistics.median(r["process jobs/s"] for r in runs)
    print(f"\nthroughput ratio process/inline: {process / inline:.3f}")


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--n", type=int, default=100, help="jobs per burst")
    p.add_argument("--seq", type=int, default=30, help="jobs run one after another")
    p.add_argument("--max-concurrent", type=int, default=64)
    p.add_argument("--max-workers", type=int, default=16)
    p.add_argument("--start-method", choices=("forkserver", "spawn"), default=None)
    args = p.parse_args()
    runs = []
    with tempfile.TemporaryDirectory(prefix="aftd-isobench-") as tmp:
        for i in range(args.runs):
            runs.append(await one_run(args, Path(tmp) / f"run{i}"))
            print(f"run {i + 1}/{args.runs}: "
                  f"inline {runs[-1]['inline jobs/s']:.1f} jobs/s, "
                  f"process {runs[-1]['process jobs/s']:.1f} jobs/s", flush=True)
    report(runs)


if __name__ == "__main__":
    asyncio.run(main())
