"""Does blocking work starve the API or secret lookups? Latency while local tree copies run.

    python bench/executors_bench.py [--trees 4] [--files 1000] [--file-kib 16] [--file-io 4]
                                    [--provider file|vault]

The daemon runs as its own process (tests/fixtures/daemon.py) with two local VFS and one secret
provider, cache off so every lookup goes through it: the private file, or an OpenBao dev server
(tests/fixtures/openbao.py; its hvac calls are blocking work). Two phases, idle and
loaded (``--trees`` concurrent jobs each copying a tree of ``--files`` files local→local):

* ``GET /v1/health`` latency seen by a client (p50/p99 over the phase), and
* ``job.secret()`` latency inside a job (p50/p99 of 200 lookups), which uses the ``secrets``
  executor while the copies fill ``file_io``.

Printed: both phases and the loaded/idle ratios. Shared, noisy 2-core machine: expect ±30%.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.fixtures.daemon import Api, DaemonProcess  # noqa: E402
from tests.fixtures.openbao import OpenBaoServer, require_bao  # noqa: E402

COPY = '''
async def main(job):
    res = await job.vfs("src").copy_to(job.params["tree"], job.vfs("dst"), job.params["dst"])
    job.log.info("copied", files=res.files)
'''
LOOKUPS = '''
import time

async def main(job):
    times = []
    for _ in range(int(job.params.get("n", 200))):
        start = time.perf_counter()
        await job.secret("token")
        times.append(time.perf_counter() - start)
    times.sort()
    job.log.info("lookups", p50=times[len(times) // 2], p99=times[int(len(times) * 0.99)])
'''


def quantiles(xs: list[float]) -> tuple[float, float]:
    xs = sorted(xs)
    return statistics.median(xs), xs[min(len(xs) - 1, int(len(xs) * 0.99))]


def make_trees(src: Path, trees: int, files: int, kib: int) -> None:
    blob = os.urandom(kib << 10)
    for t in range(trees):
        for i in range(files):
            p = src / f"t{t}" / f"d{i % 10}" / f"f{i:05d}.bin"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(blob)


async def health_latencies(api: Api, stop: asyncio.Event) -> list[float]:
    out = []
    while not stop.is_set():
        start = time.perf_counter()
        status, _ = await api.request("GET", "/v1/health")
        out.append(time.perf_counter() - start)
        assert status == 200
        await asyncio.sleep(0.01)
    return out


async def run_job(api: Api, script: str, params: dict[str, Any]) -> dict[str, Any]:
    status, body = await api.trigger(script, params)
    assert status == 201, body
    job = await api.wait_job(body["jobId"], timeout=600)
    assert job["status"] == "succeeded", job
    _, log = await api.request("GET", f"/v1/jobs/{body['jobId']}/log")
    return next(line for line in log["lines"] if line["event"] in ("lookups", "copied"))


async def phase(api: Api, copies: list[dict[str, Any]]) -> dict[str, float]:
    stop = asyncio.Event()
    health = asyncio.create_task(health_latencies(api, stop))
    jobs = [asyncio.create_task(run_job(api, "copy", p)) for p in copies]
    await asyncio.sleep(0.5 if copies else 0)  # let the copies get going
    lookups = await run_job(api, "lookups", {})
    if not copies:
        await asyncio.sleep(2)  # a comparable number of health samples
    await asyncio.gather(*jobs)
    stop.set()
    h50, h99 = quantiles(await health)
    return {"health_p50": h50, "health_p99": h99, "secret_p50": lookups["p50"],
            "secret_p99": lookups["p99"]}


def secrets_config(base: Path, provider: str, bao: OpenBaoServer | None) -> str:
    if bao is not None:
        bao.write_kv("aftd/token", {"value": "bench-only"})
        token_file = base / "bao-token"
        token_file.write_text(bao.create_token(policies=[bao.read_policy()]))
        token_file.chmod(0o600)
        return f"""
[secrets]
order = ["vault"]
cache_ttl_s = 0
[secrets.vault]
url = "{bao.url}"
auth = "token"
token_file = "{token_file}"
"""
    secrets = base / "secrets.toml"
    secrets.write_text('token = "bench-only"\n')
    secrets.chmod(0o600)
    return f"""
[secrets]
order = ["file"]
cache_ttl_s = 0
[secrets.file]
path = "{secrets}"
"""


async def measure(base: Path, args: argparse.Namespace, secrets: str) -> tuple[dict[str, float],
                                                                                dict[str, float]]:
    d = DaemonProcess(base / "daemon", scripts={"copy": COPY, "lookups": LOOKUPS},
                      extra_config=f"""
[executors]
file_io = {args.file_io}
{secrets}
[vfs.src]
type = "local"
root = "{base / 'src'}"
[vfs.dst]
type = "local"
root = "{base / 'dst'}"
""")
    await d.start()
    api = Api(d)
    try:
        idle = await phase(api, [])
        loaded = await phase(api, [{"tree": f"t{t}", "dst": f"run{t}"} for t in range(args.trees)])
    finally:
        await api.close()
        d.stop()
    return idle, loaded


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="aftd-exec-bench-") as tmp:
        base = Path(tmp)
        (base / "dst").mkdir()
        make_trees(base / "src", args.trees, args.files, args.file_kib)
        bao = None
        if args.provider == "vault":
            bao = OpenBaoServer(require_bao(), base / "bao")
            bao.start()
        try:
            idle, loaded = await measure(base, args, secrets_config(base, args.provider, bao))
        finally:
            if bao is not None:
                bao.stop()
    print(f"{args.trees} local tree copies x {args.files} files of {args.file_kib} KiB, "
          f"file_io = {args.file_io} threads, secrets from {args.provider}")
    for key in idle:
        print(f"  {key:11s} idle {idle[key] * 1000:8.2f} ms   loaded {loaded[key] * 1000:8.2f} ms"
              f"   x{loaded[key] / max(idle[key], 1e-9):.1f}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trees", type=int, default=4)
    p.add_argument("--files", type=int, default=1000)
    p.add_argument("--file-kib", type=int, default=16)
    p.add_argument("--file-io", type=int, default=4)
    p.add_argument("--provider", choices=("file", "vault"), default="file")
    asyncio.run(main(p.parse_args()))
