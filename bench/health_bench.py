"""How responsive the API stays while the daemon copies: ``GET /v1/health`` latency under load.

The daemon runs as its own process (tests/fixtures/daemon.py) with a local VFS. Each run starts
N jobs at once that each copy a tree of F small files (local -> local, through the copy engine
and the job store's progress and log writes), and while they run this process sends
``GET /v1/health`` one request after the other over one kept-alive HTTPS connection and
records each latency. It prints p50/p99/max per run and the medians and ranges over runs, next
to the same probe against the idle daemon. The target on a 2-core machine is p99 < 50 ms.

    python bench/health_bench.py [--runs 3] [--jobs 4] [--files 1000] [--size-kib 64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_ROOT))

from tests.fixtures.daemon import Api, DaemonProcess  # noqa: E402

COPY_TREE = '''
async def main(job):
    src, dst = job.vfs("src"), job.vfs("dst")
    result = await src.copy_to(job.params["tree"], dst, job.params["dest"])
    job.log.info("copied", files=result.files, bytes=result.bytes)
'''


def make_trees(src: Path, jobs: int, files: int, size: int) -> None:
    block = os.urandom(size)
    for j in range(jobs):
        tree = src / f"tree{j}"
        for i in range(files):
            sub = tree / f"d{i % 20:02d}"
            sub.mkdir(parents=True, exist_ok=True)
            (sub / f"f{i:05d}.dat").write_bytes(block)


def config(src: Path, dst: Path, jobs: int) -> str:
    return f"""
[jobs]
max_concurrent = {jobs}
[vfs.src]
type = "local"
root = "{src}"
[vfs.dst]
type = "local"
root = "{dst}"
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def probe(api: Api, until: asyncio.Event | None, seconds: float = 0.0) -> list[float]:
    """Latencies (ms) of sequential health requests until ``until`` is set or for ``seconds``."""
    out: list[float] = []
    end = time.monotonic() + seconds
    while (until is not None and not until.is_set()) or (until is None
                                                          and time.monotonic() < end):
        t0 = time.perf_counter()
        status, _ = await api.request("GET", "/v1/health")
        out.append((time.perf_counter() - t0) * 1000)
        assert status == 200, status
        await asyncio.sleep(0.005)  # ~150-200 probes a second: a busy monitoring system
    return out


async def one_run(d: DaemonProcess, api: Api, dst: Path, run: int,
                  jobs: int) -> dict[str, Any]:
    shutil.rmtree(dst, ignore_errors=True)
    for j in range(jobs):
        (dst / f"run{run}-{j}").mkdir(parents=True)
    done = asyncio.Event()
    ids = []
    t0 = time.monotonic()
    for j in range(jobs):
        status, job = await api.trigger("copy_tree", {"tree": f"tree{j}",
                                                      "dest": f"run{run}-{j}"})
        assert status == 201, job
        ids.append(job["jobId"])

    async def wait_all() -> None:
        for job_id in ids:
            final = await api.wait_job(job_id, timeout=600)
            assert final["status"] == "succeeded", final
        done.set()

    waiter = asyncio.create_task(wait_all())
    lat = await probe(api, done)
    await waiter
    return {"p50": percentile(lat, 50), "p99": percentile(lat, 99), "max": max(lat),
            "n": len(lat), "copy_s": time.monotonic() - t0}


def fmt(values: list[float]) -> str:
    return f"median {statistics.median(values):6.1f} ms (range {min(values):.1f}-{max(values):.1f})"


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--size-kib", type=int, default=64)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="aftd-health-bench-") as tmp:
        root = Path(tmp)
        src, dst = root / "src", root / "dst"
        make_trees(src, args.jobs, args.files, args.size_kib * 1024)
        d = DaemonProcess(root / "daemon", scripts={"copy_tree": COPY_TREE},
                          extra_config=config(src, dst, args.jobs))
        await d.start()
        api = Api(d)
        try:
            idle = await probe(api, None, seconds=3.0)
            print(f"idle: p50 {percentile(idle, 50):.1f} ms, p99 {percentile(idle, 99):.1f} ms "
                  f"({len(idle)} requests)")
            await one_run(d, api, dst, 0, args.jobs)  # warm-up: page cache, imports
            results = []
            for run in range(1, args.runs + 1):
                r = await one_run(d, api, dst, run, args.jobs)
                results.append(r)
                print(f"run {run}: {args.jobs} x {args.files} files copied in {r['copy_s']:.1f} s;"
                      f" health p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms, max "
                      f"{r['max']:.1f} ms ({r['n']} requests)")
        finally:
            await api.close()
            d.stop()
    print(f"health p50 under load: {fmt([r['p50'] for r in results])}")
    print(f"health p99 under load: {fmt([r['p99'] for r in results])}  (target < 50 ms)")
    print(f"health max under load: {fmt([r['max'] for r in results])}")


if __name__ == "__main__":
    asyncio.run(main())
