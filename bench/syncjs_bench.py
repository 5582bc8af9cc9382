"""What a SyncJS job costs next to a Python one in a worker process, through the real daemon.

    python bench/syncjs_bench.py [--runs 3] [--n 100] [--seq 20] [--max-workers 16]

Both scripts do the same small work: read a param, resolve nothing, log two lines, exit 0. A
SyncJS job always runs in a worker process (the only place a JavaScript loop can be stopped), so
the fair comparison is a Python script with ``ISOLATION = "process"``. Per run and per kind:

* sequential: ``--seq`` jobs one after another; the job's own run time (``startedAt`` →
  ``finishedAt``) p50/p99;
* burst: ``--n`` jobs triggered at once; jobs/s from the first ``createdAt`` to the last
  ``finishedAt``. Then a second burst sampled from /proc every 20 ms (sampling takes CPU the
  jobs would use, so it is not timed): the peak number of worker processes, the peak RSS of the
  daemon itself and the peak PSS of the daemon plus all its descendants (forkserver and
  workers; PSS splits shared pages, so the sum is honest).

Medians over ``--runs`` runs with the range, then the ratio SyncJS / Python. Shared, noisy
2-core machine: compare the kinds of one run, and note the load average beside the figures.
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

from bench.jobtiming import burst, job_daemon, pct, print_medians, sequential  # noqa: E402
from tests.fixtures.daemon import Api, DaemonProcess  # noqa: E402

PYTHON = '''ISOLATION = "process"


async def main(job):
    name = job.params.get("name", "world")
    job.log.info("hello " + name)
    job.log.info("done")
    return 0
'''
SYNCJS = """// The same work as the Python script, in SyncJS.
var name = Params("name") || "world";
Log.Info("hello " + name);
Log.Info("done");
Exit(0);
"""
SCRIPTS = {"py": PYTHON, "js.js": SYNCJS}
KINDS = {"python (process)": "py", "syncjs": "js"}
def _kib(path: str, key: str) -> int:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:  # the process ended meanwhile
        pass
    return 0


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out[1:]


class Sampler:
    """Peak memory of the daemon and its process tree while a burst runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.workers = self.daemon_rss = self.tree_pss = 0

    async def run(self) -> None:
        while True:
            tree = descendants(self.pid)
            self.workers = max(self.workers, max(len(tree) - 1, 0))  # less the forkserver
            self.daemon_rss = max(self.daemon_rss, _kib(f"/proc/{self.pid}/status", "VmRSS"))
            pss = sum(_kib(f"/proc/{p}/smaps_rollup", "Pss") for p in [self.pid, *tree])
            self.tree_pss = max(self.tree_pss, pss)
            await asyncio.sleep(0.02)


def _name(i: int) -> dict[str, str]:
    return {"name": str(i)}


async def sampled_burst(api: Api, d: DaemonProcess, script: str, n: int) -> dict[str, float]:
    """Peak memory during a burst (a second one: sampling /proc takes CPU from the jobs)."""
    assert d.proc is not None
    sampler = Sampler(d.proc.pid)
    sampling = asyncio.create_task(sampler.run())
    try:
        await burst(api, script, n, _name)
    finally:
        sampling.cancel()
    return {"peak workers": sampler.workers, "peak daemon RSS MB": sampler.daemon_rss / 1024,
            "peak daemon+workers PSS MB": sampler.tree_pss / 1024}


async def one_run(args: argparse.Namespace, root: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    async with job_daemon(root, SCRIPTS, max_concurrent=args.n,
                          max_workers=args.max_workers) as (d, api):
        for script in KINDS.values():  # warm up: forkserver, imports, TLS
            await sequential(api, script, 3, {"name": "ops"})
        for kind, script in KINDS.items():
            own, _ = await sequential(api, script, args.seq, {"name": "ops"})
            out[f"{kind} job p50 ms"] = pct(own, 0.5) * 1e3
            out[f"{kind} job p99 ms"] = pct(own, 0.99) * 1e3
            out[f"{kind} jobs/s"] = await burst(api, script, args.n, _name)
            for key, value in (await sampled_burst(api, d, script, args.n)).items():
                out[f"{kind} {key}"] = value
    return out


def report(runs: list[dict[str, float]]) -> None:
    print_medians(runs)
    for metric in ("jobs/s", "job p50 ms", "peak daemon+workers PSS MB"):
        js = statistics.median(r[f"syncjs {metric}"] for r in runs)
        py = statistics.median(r[f"python (process) {metric}"] for r in runs)
        print(f"ratio syncjs / python (process), {metric}: {js / py:.3f}")
    print(f"load average: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} "
          f"{os.getloadavg()[2]:.2f}")


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--n", type=int, default=100, help="jobs per burst")
    p.add_argument("--seq", type=int, default=20, help="jobs run one after another")
    p.add_argument("--max-workers", type=int, default=16)
    args = p.parse_args()
    runs = []
    print(f"load average at start: {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="aftd-syncjsbench-") as tmp:
        for i in range(args.runs):
            runs.append(await one_run(args, Path(tmp) / f"run{i}"))
            print(f"run {i + 1}/{args.runs}: syncjs {runs[-1]['syncjs jobs/s']:.1f} jobs/s, "
                  f"python {runs[-1]['python (process) jobs/s']:.1f} jobs/s", flush=True)
    report(runs)


if __name__ == "__main__":
    asyncio.run(main())
