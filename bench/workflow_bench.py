"""Claim → transfer → report benchmark: N concurrent workflows through the real daemon.

    python bench/workflow_bench.py [--n 100 1000] [--file-kib 4] [--max-concurrent 64]

(``BENCH_DEST=src`` copies local→local instead of local→SFTP, to separate SFTP costs.)

Everything is local: a private OpenSSH sshd (tests/fixtures/sshd.py) as the SFTP destination,
the orchestrator HTTP server of the tests (tests/fixtures/orchestrator.py) in this process, and
the daemon as its own process (tests/fixtures/daemon.py) triggered over its HTTPS API. Each
workflow claims its own orchestrator job, copies one small local file to SFTP and reports.

Printed per N: workflows/s (first trigger sent → last report accepted), p50/p99 end-to-end
latency (trigger sent → report accepted), daemon CPU seconds per workflow (from /proc, the
daemon only), daemon peak RSS (VmHWM), and the check that matters most: claims, distinct
reports and duplicate deliveries. Shared, noisy 2-core machine: expect ±20% between runs.
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


def config(src: Path, sshd: SshdServer, max_concurrent: int) -> str:
    opts = sshd.vfs_options()
    partner = "\n".join(f'{k} = {v}' if isinstance(v, int) else f'{k} = "{v}"'
                        for k, v in opts.items())
    return f"""
[logging]
level = "warning"
[jobs]
max_concurrent = {max_concurrent}
[vfs.src]
type = "local"
root = "{src}"
[vfs.partner]
{partner}
"""


async def run_batch(api: Api, orch: Orchestrator, src: Path, tag: str, n: int,
                    file_kib: int, pid: int) -> dict[str, Any]:
    names = [f"{tag}-{i}" for i in range(n)]
    data = os.urandom(file_kib * 1024)
    for name in names:
        (src / f"{name}.dat").write_bytes(data)
        orch.add_job(name, {"sourceVfs": "src", "sourcePath": f"{name}.dat",
                            "destVfs": DEST, "destDir": "inbound"})
    sent: dict[str, float] = {}
    limit = asyncio.Semaphore(100)

    async def trigger(name: str) -> None:
        async with limit:
            sent[name] = time.monotonic()
            status, body = await api.trigger("claim_transfer_report",
                                             [{"name": "job_id", "value": name}])
            if status != 201:
                raise RuntimeError(f"trigger {name}: {status} {body}")

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
        "p50_ms": 1000 * statistics.median(lat),
        "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))],
        "cpu_per_wf_ms": 1000 * cpu / n, "rss_mb": peak_rss_mb(pid),
        "claims": sum(orch.claims(name) for name in names),
        "reports": sum(len(orch.reports(name)) for name in names),
        "accepted": sum(1 for a in orch.report_attempts() if a.job_id in sent
                        and a.answered == 200),
        "completed": sum(orch.reports(name) == [{"jobId": name, "status": "completed",
                                                 "agent": "aftd"}] for name in names),
    }


async def main(ns: list[int], file_kib: int, max_concurrent: int) -> int:
    with tempfile.TemporaryDirectory(prefix="aftd-wfbench-") as tmp:
        root = Path(tmp)
        sshd = start_sshd(root / "sshd")
        (sshd.root / "inbound").mkdir(exist_ok=True)
        orch = Orchestrator()
        await orch.start()
        src = root / "src"
        src.mkdir()
        daemon = DaemonProcess(root / "daemon", extra_config=config(src, sshd, max_concurrent),
                               env={"AFTD_SECRET_ORCH_API_URL": orch.url,
                                    "AFTD_SECRET_ORCH_API_TOKEN": orch.token,
                                    "AFTD_SECRET_SSHD_KEY": sshd.user_key_text},
                               scripts={"claim_transfer_report": SCRIPT})
        await daemon.start()
        api = ReusingApi(daemon)
        ok = True
        try:
            assert daemon.proc is not None
            pid = daemon.proc.pid
            await run_batch(api, orch, src, "warmup", 20, file_kib, pid)
            print(f"{'N':>6} {'wf/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms/wf':>10} "
                  f"{'RSS MB':>7} {'claims':>7} {'reports':>8} {'accepted':>9} {'completed':>9}")
            for i, n in enumerate(ns):
                r = await run_batch(api, orch, src, f"b{i}n{n}", n, file_kib, pid)
                print(f"{r['n']:>6} {r['wf_per_s']:>8.1f} {r['p50_ms']:>8.0f} "
                      f"{r['p99_ms']:>8.0f} {r['cpu_per_wf_ms']:>10.1f} {r['rss_mb']:>7.0f} "
                      f"{r['claims']:>7} {r['reports']:>8} {r['accepted']:>9} "
                      f"{r['completed']:>9}", flush=True)
                ok &= r["claims"] == r["reports"] == r["accepted"] == r["completed"] == n
        finally:
            await api.close()
            daemon.stop()
            await orch.stop()
            sshd.kill()
        print("zero lost, zero duplicated" if ok else "LOST OR DUPLICATED REPORTS")
        return 0 if ok else 1


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, nargs="+", default=[100, 1000])
    p.add_argument("--file-kib", type=int, default=4)
    p.add_argument("--max-concurrent", type=int, default=64)
    a = p.parse_args()
    sys.exit(asyncio.run(main(a.n, a.file_kib, a.max_concurrent)))
