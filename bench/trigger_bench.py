"""What watch triggers cost: one poll of a big remote directory, and a burst of local arrivals.

1. **SFTP poll.** A directory of N entries (10,000 and 100,000) on a loopback OpenSSH sshd is
   watched by a real daemon (``mode`` poll, ``poll_s`` 2). Every file has fired already (the
   bench writes their fire rows into the store before the daemon starts, from a listing through
   the same VFS code), so each poll lists the directory and checks every entry against the
   versions in memory, as a steady-state drop folder does. Time per poll comes from the
   daemon's own ``aftd_watch_poll_duration_seconds`` (scraped after every poll); memory is the
   daemon's RSS after the polls and its peak (VmHWM), next to a daemon without the trigger.
2. **Local arrivals.** 10,000 files are written into a local directory as fast as this process
   can; the daemon (inotify, and for comparison ``mode = "poll"`` with ``poll_s`` 1) fires a
   job for each once stable (``stable_s`` 1). Printed: seconds from the first file to the last
   job submitted and to the last job ended, jobs/s, peak RSS, and the ratio poll/inotify.

    python bench/trigger_bench.py [--runs 3] [--sizes 10000 100000] [--arrivals 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_ROOT))

from aftd.configmodel import Section  # noqa: E402
from aftd.triggers.files import file_key, is_candidate  # noqa: E402
from aftd.triggers.store import Fire, SqliteTriggerStore  # noqa: E402
from aftd.vfs.config import parse_vfs_section  # noqa: E402
from aftd.vfs.registry import VfsPool  # noqa: E402
from tests.fixtures.daemon import Api, DaemonProcess  # noqa: E402
from tests.fixtures.sshd import SshdServer, start_sshd  # noqa: E402

NOOP = "async def main(job):\n    return 0\n"
_POLL = re.compile(r'aftd_watch_poll_duration_seconds_(sum|count)\{trigger="(\w+)"\} (\S+)')


class _Secrets:
    def __init__(self, key: str) -> None:
        self.key = key

    async def get(self, name: str) -> str:
        return self.key


def _rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text()
                  .splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def _sftp_toml(srv: SshdServer, root: Path) -> str:
    opts = srv.vfs_options(root=str(root))
    return "[vfs.remote]\n" + "".join(
        f"{k} = {v!r}\n".replace("'", '"') for k, v in opts.items())


async def _prefire(db: Path, srv: SshdServer, root: Path, trigger: str) -> int:
    """Write a done fire row for every file, keyed exactly as the daemon will see it."""
    opts = srv.vfs_options(root=str(root))
    pool = VfsPool(parse_vfs_section(Section({"remote": opts}, "bench", "vfs")),
                   _Secrets(srv.user_key_text))
    try:
        infos = [i for i in await pool.get("remote").listdir("drop") if is_candidate(i, "*")]
    finally:
        await pool.aclose()
    store = SqliteTriggerStore(db)
    await store.open()
    try:
        fires = [Fire(trigger=trigger, key=file_key("remote", i.path, i.size, i.mtime),
                      kind="watch", script="noop", params={}, path=i.path, size=i.size,
                      mtime=i.mtime, state="done") for i in infos]
        await store.claim(fires, time.time())
    finally:
        await store.close()
    return len(infos)


async def _poll_durations(api: Api, polls: int, timeout: float) -> list[float]:
    """Scrape the poll histogram until ``polls`` more polls ended; each poll's duration."""
    out: list[float] = []
    last: tuple[float, float] | None = None
    deadline = time.monotonic() + timeout
    while len(out) < polls and time.monotonic() < deadline:
        _, text = await api.request("GET", "/metrics")
        values = {k: float(v) for k, name, v in _POLL.findall(text) if name == "big"}
        now = (values.get("count", 0.0), values.get("sum", 0.0))
        if last is not None and now[0] == last[0] + 1:
            out.append(now[1] - last[1])
        if last is None or now[0] != last[0]:
            last = now
        await asyncio.sleep(0.05)
    return out


async def sftp_run(srv: SshdServer, n: int, work: Path, polls: int) -> dict[str, Any]:
    root = srv.root / f"bench{n}"
    drop = root / "drop"
    if not drop.is_dir() or len(os.listdir(drop)) != n:
        shutil.rmtree(root, ignore_errors=True)
        drop.mkdir(parents=True)
        for i in range(n):
            (drop / f"file-{i:06d}.csv").write_bytes(b"x")
    env = {"AFTD_SECRET_SSHD_KEY": srv.user_key_text}
    base = DaemonProcess(work / f"idle{n}", scripts={"noop": NOOP}, env=env,
                         extra_config=_sftp_toml(srv, root))
    await base.start()
    await asyncio.sleep(1)
    assert base.proc is not None
    idle = _rss_kib(base.proc.pid)[0]
    base.stop()
    d = DaemonProcess(work / f"poll{n}", scripts={"noop": NOOP}, env=env,
                      extra_config=_sftp_toml(srv, root) + '[[triggers]]\nname = "big"\n'
                      'type = "watch"\nvfs = "remote"\npath = "drop"\nscript = "noop"\n'
                      'mode = "poll"\npoll_s = 2\nstable_s = 0\n')
    d.state_dir.mkdir(parents=True, exist_ok=True)
    await _prefire(d.state_dir / "aftd.sqlite", srv, root, "big")
    await d.start()
    api = Api(d)
    try:
        durations = await _poll_durations(api, polls, timeout=120 + n / 500)
        assert d.proc is not None
        rss, hwm = _rss_kib(d.proc.pid)
        fired = _count(d.state_dir / "aftd.sqlite", "big")
    finally:
        await api.close()
        d.stop()
    return {"poll_s": statistics.median(durations), "rss_mib": rss / 1024,
            "hwm_mib": hwm / 1024, "idle_mib": idle / 1024, "jobs": fired}


_COUNT = "SELECT COUNT(*) FROM jobs WHERE trigger = ?"
_COUNT_ENDED = (_COUNT + " AND status IN ('succeeded', 'failed', 'cancelled', 'interrupted')")


def _count(db: Path, trigger: str, final: bool = False) -> int:
    sql = _COUNT_ENDED if final else _COUNT
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        return int(conn.execute(sql, (trigger,)).fetchone()[0])


async def arrivals_run(work: Path, n: int, mode: str) -> dict[str, Any]:
    drop = work / f"drop-{mode}"
    shutil.rmtree(drop, ignore_errors=True)
    drop.mkdir(parents=True)
    d = DaemonProcess(work / f"arrive-{mode}", scripts={"noop": NOOP}, extra_config=(
        f'[jobs]\nmax_concurrent = 64\n[vfs.drop]\ntype = "local"\nroot = "{drop}"\n'
        f'[[triggers]]\nname = "arrive"\ntype = "watch"\nvfs = "drop"\nscript = "noop"\n'
        f'mode = "{mode}"\npoll_s = 1\nstable_s = 1\n'))
    await d.start()
    assert d.proc is not None
    db = d.state_dir / "aftd.sqlite"
    try:
        start = time.monotonic()
        for i in range(n):
            (drop / f"in-{i:06d}.csv").write_bytes(b"y")
        written = time.monotonic() - start
        hwm = 0
        submitted = ended = None
        deadline = start + 600
        while ended is None and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            hwm = max(hwm, _rss_kib(d.proc.pid)[1])
            if submitted is None and _count(db, "arrive") >= n:
                submitted = time.monotonic() - start
            if submitted is not None and _count(db, "arrive", final=True) >= n:
                ended = time.monotonic() - start
        jobs = _count(db, "arrive")
    finally:
        d.stop()
    if ended is None or submitted is None:
        raise RuntimeError(f"{mode}: not all jobs ended within 600 s")
    return {"written_s": written, "submitted_s": submitted, "ended_s": ended,
            "jobs_per_s": n / ended, "hwm_mib": hwm / 1024, "jobs": jobs}


def _fmt(values: list[float], unit: str = "", digits: int = 2) -> str:
    med = statistics.median(values)
    return f"{med:.{digits}f}{unit} ({min(values):.{digits}f}-{max(values):.{digits}f})"


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--arrivals", type=int, default=10_000)
    p.add_argument("--polls", type=int, default=3)
    args = p.parse_args()
    print(f"load average: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")
    work = Path(tempfile.mkdtemp(prefix="aftd-trigger-bench-"))
    srv = start_sshd(work / "sshd")
    try:
        for n in args.sizes:
            runs = [await sftp_run(srv, n, work / f"r{r}", args.polls) for r in range(args.runs)]
            assert all(r["jobs"] == 0 for r in runs), "a known file fired again"
            print(f"SFTP poll of {n:,} entries: "
                  f"{_fmt([r['poll_s'] for r in runs], ' s', 3)} per poll "
                  f"({n / statistics.median(r['poll_s'] for r in runs):,.0f} entries/s); "
                  f"daemon RSS {_fmt([r['rss_mib'] for r in runs], ' MiB', 0)}, peak "
                  f"{_fmt([r['hwm_mib'] for r in runs], ' MiB', 0)}, without the trigger "
                  f"{_fmt([r['idle_mib'] for r in runs], ' MiB', 0)}")
        results: dict[str, list[dict[str, Any]]] = {}
        for mode in ("inotify", "poll"):
            results[mode] = [await arrivals_run(work / f"a{r}", args.arrivals, mode)
                             for r in range(args.runs)]
            rs = results[mode]
            assert all(r["jobs"] == args.arrivals for r in rs), [r["jobs"] for r in rs]
            print(f"{args.arrivals:,} local files arriving, {mode}: written in "
                  f"{_fmt([r['written_s'] for r in rs], ' s')}; all submitted after "
                  f"{_fmt([r['submitted_s'] for r in rs], ' s')}, all ended after "
                  f"{_fmt([r['ended_s'] for r in rs], ' s')} "
                  f"({_fmt([r['jobs_per_s'] for r in rs], ' jobs/s', 0)}); peak RSS "
                  f"{_fmt([r['hwm_mib'] for r in rs], ' MiB', 0)}")
        ratio = statistics.median(r["submitted_s"] for r in results["poll"]) / statistics.median(
            r["submitted_s"] for r in results["inotify"])
        print(f"time to all submitted, poll / inotify: {ratio:.2f}x")
    finally:
        srv.kill()
        shutil.rmtree(work, ignore_errors=True)
    print(f"load average: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
