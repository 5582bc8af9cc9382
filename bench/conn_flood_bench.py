"""Connection flood: does the daemon's memory return to its baseline after a flood?

    python bench/conn_flood_bench.py [--runs 3] [--conns 1000] [--max-connections 2500]
                                     [--no-trim]

Each run starts a fresh daemon (tests/fixtures/daemon.py) and measures its RSS (VmRSS, from
/proc) at four points per phase:

1. **idle**: ``--conns`` TLS connections that complete the handshake and send nothing; the
   daemon closes them after ``server.header_timeout_s``.
2. **slow body**: ``--conns`` authenticated ``POST /v1/jobs`` that send their headers and a few
   bytes of a 1,000-byte body, then nothing; the daemon answers 408 after
   ``server.body_timeout_s`` and closes them.

Printed per phase: RSS before the flood, at its peak (all connections held), once the daemon has
closed them all, and two seconds later (after the daemon's ``malloc_trim``); medians and ranges
over the runs. ``--max-connections`` is raised above the flood by default so every connection is
held; pass ``--max-connections 256`` (the default config) to see the cap refuse the excess.
``--no-trim`` sets ``AFTD_MALLOC_TRIM=0`` in the daemon to show what the trim is worth.
Shared, noisy 2-core machine: compare within one run, expect ±20% between runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.fixtures.daemon import API_KEY, Api, DaemonProcess  # noqa: E402

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]
POINTS = ("before", "peak", "closed", "settled")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


async def open_many(d: DaemonProcess, n: int, first_bytes: bytes | None) -> list[Stream]:
    ctx = d.ssl_context()
    sem = asyncio.Semaphore(64)

    async def one() -> Stream | None:
        async with sem:
            try:
                r, w = await asyncio.open_connection("127.0.0.1", d.port, ssl=ctx,
                                                     server_hostname="127.0.0.1",
                                                     ssl_handshake_timeout=60)
            except (OSError, ssl.SSLError):
                return None  # refused: over max_connections
            if first_bytes:
                w.write(first_bytes)
                await w.drain()
            return r, w

    got = await asyncio.gather(*(one() for _ in range(n)))
    return [s for s in got if s is not None]


async def wait_closed_by_server(streams: list[Stream], limit_s: float) -> None:
    async def one(r: asyncio.StreamReader) -> None:
        with contextlib.suppress(OSError, ssl.SSLError, asyncio.IncompleteReadError):
            while await r.read(65536):
                pass

    await asyncio.wait_for(asyncio.gather(*(one(r) for r, _ in streams)), limit_s)
    for _, w in streams:
        w.close()


async def settle(d: DaemonProcess, baseline_fds: int, limit_s: float = 60) -> None:
    """Until the daemon holds no more sockets than before the flood."""
    assert d.proc is not None
    deadline = time.monotonic() + limit_s
    while open_fds(d.proc.pid) > baseline_fds + 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.2)


async def phase(d: DaemonProcess, n: int, first_bytes: bytes | None,
                limit_s: float) -> tuple[dict[str, float], int]:
    assert d.proc is not None
    pid = d.proc.pid
    fds = open_fds(pid)
    out = {"before": rss_mb(pid)}
    streams = await open_many(d, n, first_bytes)
    out["peak"] = rss_mb(pid)
    await wait_closed_by_server(streams, limit_s)
    await settle(d, fds)
    out["closed"] = rss_mb(pid)
    await asyncio.sleep(2.0)
    out["settled"] = rss_mb(pid)
    return out, len(streams)


SLOW_BODY = (b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: " + API_KEY.encode()
             + b"\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"scr")


async def one_run(args: argparse.Namespace) -> dict[str, tuple[dict[str, float], int]]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {"AFTD_MALLOC_TRIM": "0"} if args.no_trim else {}
        d = DaemonProcess(Path(tmp), scripts={"hello": "async def main(job):\n    pass\n"},
                          env=env, extra_config='[logging]\nlevel = "warning"\n',
                          server_config=f"max_connections = {args.max_connections}\n"
                                        f"header_timeout_s = {args.header_timeout}\n"
                                        f"body_timeout_s = {args.body_timeout}\n")
        await d.start()
        try:
            api = Api(d)  # warm up: a few ordinary requests first
            for _ in range(20):
                await api.request("GET", "/v1/health")
                await api.trigger("hello")
            await api.close()
            await asyncio.sleep(1.0)
            limit = args.header_timeout + args.body_timeout + 60
            idle = await phase(d, args.conns, None, limit)
            slow = await phase(d, args.conns, SLOW_BODY, limit)
            return {"idle TLS": idle, "slow body": slow}
        finally:
            d.stop()


def fmt(values: list[float]) -> str:
    return f"{statistics.median(values):7.1f} ({min(values):.0f}-{max(values):.0f})"


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--conns", type=int, default=1000)
    p.add_argument("--max-connections", type=int, default=2500)
    p.add_argument("--header-timeout", type=float, default=20.0)
    p.add_argument("--body-timeout", type=float, default=20.0)
    p.add_argument("--no-trim", action="store_true")
    args = p.parse_args()
    results = [await one_run(args) for _ in range(args.runs)]
    print(f"\n{args.conns} connections per phase, max_connections={args.max_connections}, "
          f"malloc_trim {'off' if args.no_trim else 'on'}, {args.runs} runs; "
          "daemon RSS in MB, median (range)")
    print(f"{'phase':10}  {'held':>5}  " + "  ".join(f"{p:>17}" for p in POINTS))
    for name in results[0]:
        held = statistics.median(r[name][1] for r in results)
        cols = [fmt([r[name][0][pt] for r in results]) for pt in POINTS]
        print(f"{name:10}  {held:5.0f}  " + "  ".join(f"{c:>17}" for c in cols))


if __name__ == "__main__":
    asyncio.run(main())
