"""Fleet benchmark: claim → transfer → report workflows on 1, 2 and 3 daemons sharing one
PostgreSQL database, and SQLite vs PostgreSQL for one daemon.

    python bench/fleet_bench.py [--runs 3] [--n 200] [--concurrency 32] [--file-kib 4]

Everything is local: a private PostgreSQL server (tests/fixtures/postgres.py, Debian's
binaries), the orchestrator HTTP server of the tests in this process, and each daemon as its own
process triggered round-robin over its HTTPS API. Each workflow claims its own orchestrator job,
copies one small local file to another local directory and reports.

Printed per setup: workflows/s (first trigger → last report accepted), p99 end-to-end latency
(trigger sent → report accepted), daemon CPU ms per workflow (all daemons, from /proc), and
database transactions per workflow (``pg_stat_database.xact_commit``: each is at least one
round-trip; a multi-statement transaction costs one more per statement, plus BEGIN and COMMIT;
background work, heartbeats and counts, is included). Medians over ``--runs`` with [min-max],
then the ratios. On a 2-core machine the daemons, PostgreSQL and this client share the CPU: more
daemons cannot add throughput here, they only show the cost of coordination.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.fixtures.daemon import Api, DaemonProcess  # noqa: E402
from tests.fixtures.orchestrator import Orchestrator  # noqa: E402
from tests.fixtures.postgres import PostgresServer, cleanup, start_postgres  # noqa: E402
from tests.report.e2e import BUNDLED  # noqa: E402
from tests.store.fleet import migrate_cli  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
SETUPS = (("sqlite", 1), ("postgres", 1), ("postgres", 2), ("postgres", 3))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class ReusingApi(Api):
    """One TLS context per daemon, so connections are reused."""

    def __init__(self, daemon: DaemonProcess) -> None:
        super().__init__(daemon)
        ctx = daemon.ssl_context()
        daemon.ssl_context = lambda: ctx  # type: ignore[method-assign]


def _config(root: Path, i: int, pg: PostgresServer | None, database: str) -> str:
    store = ""
    if pg is not None:
        opts = pg.store_options(database)
        store = (f'[store]\nurl = "{opts["url"]}"\npassword_secret = '
                 f'"{opts["password_secret"]}"\n[host]\nid = "bench{i}"\nlease_s = 10\n')
    return store + f"""
[logging]
level = "warning"
[jobs]
max_concurrent = 64
[vfs.src]
type = "local"
root = "{root / 'src'}"
[vfs.dst]
type = "local"
root = "{root / 'dst'}"
"""


async def _daemons(root: Path, n: int, pg: PostgresServer | None, orch: Orchestrator,
                   database: str) -> list[DaemonProcess]:
    env = {"AFTD_SECRET_ORCH_API_URL": orch.url, "AFTD_SECRET_ORCH_API_TOKEN": orch.token}
    if pg is not None:
        env["AFTD_SECRET_AFTD_DB_PASSWORD"] = pg.password
    ds = [DaemonProcess(root / f"d{i}", extra_config=_config(root, i, pg, database), env=env,
                        scripts={"claim_transfer_report": BUNDLED}) for i in range(n)]
    if pg is not None:
        done = migrate_cli(ds[0])
        if done.returncode:
            raise RuntimeError(done.stderr)
    await asyncio.gather(*(d.start(timeout=60) for d in ds))
    return ds


async def _xacts(pg: PostgresServer | None, database: str) -> int:
    if pg is None:
        return 0
    out = await asyncio.to_thread(pg.psql, "SELECT xact_commit + xact_rollback FROM "  # noqa: S608
                                  f"pg_stat_database WHERE datname = '{database}'")
    return int(out or 0)


async def one_run(root: Path, kind: str, n_daemons: int, pg: PostgresServer | None,
                  n: int, concurrency: int, file_kib: int) -> dict[str, Any]:
    database = f"b_{uuid.uuid4().hex[:10]}"
    if pg is not None:
        pg.psql(f'CREATE DATABASE "{database}"')
    (root / "src").mkdir(parents=True, exist_ok=True)
    (root / "dst" / "in").mkdir(parents=True, exist_ok=True)
    orch = Orchestrator()
    await orch.start()
    ds = await _daemons(root / database, n_daemons, pg, orch, database)
    apis = [ReusingApi(d) for d in ds]
    names = [f"{database}-{i}" for i in range(n)]
    data = os.urandom(file_kib * 1024)
    for name in names:
        (root / "src" / f"{name}.dat").write_bytes(data)
        orch.add_job(name, {"sourceVfs": "src", "sourcePath": f"{name}.dat",
                            "destVfs": "dst", "destDir": "in"})
    sent: dict[str, float] = {}
    limit = asyncio.Semaphore(concurrency)

    async def trigger(i: int, name: str) -> None:
        async with limit:
            sent[name] = time.monotonic()
            status, body = await apis[i % len(apis)].trigger("claim_transfer_report",
                                                             {"job_id": name})
            if status != 201:
                raise RuntimeError(f"trigger {name}: {status} {body}")
            await orch.wait_reports(name, timeout=600)

    try:
        await asyncio.sleep(1.0)  # let start-up settle
        pids = [d.proc.pid for d in ds if d.proc is not None]
        cpu0, x0, t0 = sum(map(cpu_seconds, pids)), await _xacts(pg, database), time.monotonic()
        await asyncio.gather(*(trigger(i, name) for i, name in enumerate(names)))
        wall = time.monotonic() - t0
        cpu = sum(map(cpu_seconds, pids)) - cpu0
    finally:
        for api in apis:
            await api.close()
        for d in ds:
            d.stop()
        await orch.stop()
    # Backends publish their counters when they end or go idle: read them after the stop
    # (which adds a handful of transactions per daemon).
    await asyncio.sleep(1.5)
    x1 = await _xacts(pg, database)
    first: dict[str, float] = {}
    for a in orch.report_attempts():
        if a.answered == 200:
            first.setdefault(a.job_id, a.at)
    lat = sorted(first[x] - sent[x] for x in names)
    ok = all(orch.claims(x) == 1 and len(orch.reports(x)) == 1 for x in names)
    return {"wf_per_s": n / wall, "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))],
            "cpu_ms": 1000 * cpu / n, "xact": (x1 - x0) / n, "ok": ok}


def _fmt(values: list[float], spec: str) -> str:
    return f"{statistics.median(values):{spec}} [{min(values):{spec}}-{max(values):{spec}}]"


async def main(runs: int, n: int, concurrency: int, file_kib: int) -> int:
    print(f"load average before: {os.getloadavg()[0]:.2f} (1 min); {n} workflows per run, "
          f"{concurrency} in flight, {runs} runs each")
    with tempfile.TemporaryDirectory(prefix="aftd-fleetbench-") as tmp:
        root = Path(tmp)
        pg = start_postgres(root / "pg")
        results: dict[tuple[str, int], list[dict[str, Any]]] = {}
        try:
            for _ in range(runs):
                for kind, k in SETUPS:
                    r = await one_run(root, kind, k, pg if kind == "postgres" else None, n,
                                      concurrency, file_kib)
                    results.setdefault((kind, k), []).append(r)
        finally:
            cleanup(pg)
    print(f"{'setup':<14} {'workflows/s':>22} {'p99 ms':>22} {'CPU ms/wf':>20} "
          f"{'db xact/wf':>16}")
    med: dict[tuple[str, int], float] = {}
    ok = True
    for (kind, k), rs in results.items():
        med[(kind, k)] = statistics.median(r["wf_per_s"] for r in rs)
        ok &= all(r["ok"] for r in rs)
        xact = "-" if kind == "sqlite" else _fmt([r["xact"] for r in rs], ".1f")
        print(f"{kind + ' x' + str(k):<14} {_fmt([r['wf_per_s'] for r in rs], '.1f'):>22} "
              f"{_fmt([r['p99_ms'] for r in rs], '.0f'):>22} "
              f"{_fmt([r['cpu_ms'] for r in rs], '.1f'):>20} {xact:>16}")
    base = med[("postgres", 1)]
    print(f"ratios (workflows/s): postgres x1 / sqlite x1 = {base / med[('sqlite', 1)]:.2f}; "
          f"postgres x2 / x1 = {med[('postgres', 2)] / base:.2f}; "
          f"postgres x3 / x1 = {med[('postgres', 3)] / base:.2f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print("every workflow claimed once and reported once" if ok else "LOST OR DUPLICATED")
    return 0 if ok else 1


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--file-kib", type=int, default=4)
    a = p.parse_args()
    sys.exit(asyncio.run(main(a.runs, a.n, a.concurrency, a.file_kib)))
