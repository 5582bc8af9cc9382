"""VFS copy benchmark: aftd side by side with OpenSSH sftp, cp and rclone, in one run.

    python bench/vfs_bench.py [--size-mib 1024] [--files 1000] [--file-kib 64] [--runs 3]
                              [--only 'sftp→local' ...]

Everything runs over loopback against a private OpenSSH sshd (tests/fixtures/sshd.py) on this
machine. Each copy runs in its own child process so its peak RSS (from wait4) is its own; aftd's
copy runs in a child of this script (``--child``). Printed figures are medians of ``--runs``;
ratios are "aftd throughput / reference throughput" (> 1.0 means aftd is faster). Shared,
noisy machines: compare only the ratios of one run, never absolute figures across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CIPHER = "aes128-gcm@openssh.com"


def run_measured(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, float]:
    """Run a command under GNU time: wall s, CPU s, peak RSS (MB) of it and its children.

    GNU time forks the command from its own small process, so the peak RSS is the tool's own
    (a fork from this Python process would carry our high-water mark across exec).
    """
    timed = ["/usr/bin/time", "-f", "AFTDBENCH %e %U %S %M", *cmd]
    proc = subprocess.run(timed, env=env, capture_output=True, text=True, check=False)
    marks = [ln for ln in proc.stderr.splitlines() if ln.startswith("AFTDBENCH ")]
    if proc.returncode != 0 or not marks:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    wall, user, sys_, rss_kb = (float(x) for x in marks[-1].split()[1:])
    res = {"wall": wall, "cpu": user + sys_, "rss_mb": rss_kb / 1024}
    last = proc.stdout.strip().splitlines()[-1:]
    if last and last[0].startswith("{"):
        res.update(json.loads(last[0]))
    return res


# -- the child: one aftd copy -------------------------------------------------------------
async def child_copy(args: argparse.Namespace) -> None:
    from aftd.configparse import Section
    from aftd.vfs.config import parse_vfs_section
    from aftd.vfs.registry import VfsPool

    class Secrets:
        async def get(self, name: str) -> str:
            return Path(args.key).read_text()

    entries = {
        "local": {"type": "local", "root": args.local_root},
        "remote": {"type": "sftp", "host": "127.0.0.1", "port": args.port, "user": args.user,
                   "key_secret": "k", "known_hosts": args.known_hosts, "root": args.remote_root},
    }
    pool = VfsPool(parse_vfs_section(Section(entries, "bench", "vfs")), Secrets())
    src, dst = pool.get(args.src), pool.get(args.dst)
    t0 = time.perf_counter()
    res = await src.copy_to(args.path, dst, args.dest_dir, overwrite="always",
                            verify=args.verify or None, transfers=args.transfers)
    took = time.perf_counter() - t0
    await pool.aclose()
    print(json.dumps({"copy_s": took, "bytes": res.bytes, "files": res.files}))


def aftd_cmd(ctx: dict[str, Any], src: str, dst: str, path: str, dest_dir: str,
             verify: str = "", transfers: int = 4) -> list[str]:
    s = ctx["sshd"]
    return [sys.executable, __file__, "--child", "--port", str(s.port), "--user", s.user,
            "--key", str(s.user_key), "--known-hosts", str(s.known_hosts),
            "--local-root", str(ctx["local"]), "--remote-root", str(s.root),
            "--src", src, "--dst", dst, "--path", path, "--dest-dir", dest_dir,
            "--verify", verify, "--transfers", str(transfers), "--loop", ctx["loop"]]


def sftp_cmd(ctx: dict[str, Any], batch: str) -> list[str]:
    s = ctx["sshd"]
    bf = ctx["work"] / f"batch{abs(hash(batch))}"
    bf.write_text(batch + "\n")
    return ["sftp", "-q", "-b", str(bf), "-i", str(s.user_key), "-P", str(s.port),
            "-o", f"UserKnownHostsFile={s.known_hosts}", "-o", f"Ciphers={CIPHER}",
            "-o", "BatchMode=yes", "-F", "/dev/null", f"{s.user}@127.0.0.1"]


def rclone_env(ctx: dict[str, Any]) -> dict[str, str]:
    s = ctx["sshd"]
    env = dict(os.environ)
    (ctx["work"] / "rclone.conf").write_text("")
    env.update({
        "RCLONE_CONFIG": str(ctx["work"] / "rclone.conf"),
        "RCLONE_CONFIG_BENCH_TYPE": "sftp", "RCLONE_CONFIG_BENCH_HOST": "127.0.0.1",
        "RCLONE_CONFIG_BENCH_PORT": str(s.port), "RCLONE_CONFIG_BENCH_USER": s.user,
        "RCLONE_CONFIG_BENCH_KEY_FILE": str(s.user_key),
        "RCLONE_CONFIG_BENCH_KNOWN_HOSTS_FILE": str(s.known_hosts),
    })
    return env


# -- the parent ---------------------------------------------------------------------------
def setup(args: argparse.Namespace) -> dict[str, Any]:
    from tests.fixtures.sshd import start_sshd

    work = Path(tempfile.mkdtemp(prefix="aftd-bench-", dir=args.workdir))
    local = work / "local"
    local.mkdir()
    # A minimal session for the benchmark user: no rc files, motd or lastlog at login.
    sshd = start_sshd(work / "sshd", extra_config="PermitUserRC no\nSetEnv BASH_ENV=\n")
    block = os.urandom(1 << 20)
    with (local / "big.bin").open("wb") as f:
        for i in range(args.size_mib):
            f.write(i.to_bytes(8, "big") + block[8:])
    tree = local / "tree"
    for i in range(args.files):
        d = tree / f"d{i % 10}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:05d}.dat").write_bytes(os.urandom(args.file_kib * 1024))
    os.link(local / "big.bin", sshd.root / "src.bin")  # the download source
    return {"work": work, "local": local, "sshd": sshd, "loop": args.loop}


Case = tuple[str, str, list[str], dict[str, str] | None, Path]


def cases(ctx: dict[str, Any]) -> list[Case]:
    """(group, tool, command, env, output) — the first of each group is aftd."""
    L, R = ctx["local"], ctx["sshd"].root
    renv = rclone_env(ctx)
    rc = ["rclone", "copy", "--transfers", "4", "--checkers", "8"]
    return [
        ("local→local 1 file", "aftd", aftd_cmd(ctx, "local", "local", "big.bin", "ll"), None,
         L / "ll"),
        ("local→local 1 file", "cp", ["cp", str(L / "big.bin"), str(L / "cp.bin")], None,
         L / "cp.bin"),
        ("local→sftp 1 file", "aftd", aftd_cmd(ctx, "local", "remote", "big.bin", "up"), None,
         R / "up"),
        ("local→sftp 1 file", "sftp put", sftp_cmd(ctx, f"put {L}/big.bin {R}/put.bin"), None,
         R / "put.bin"),
        ("sftp→local 1 file", "aftd", aftd_cmd(ctx, "remote", "local", "src.bin", "down"), None,
         L / "down"),
        ("sftp→local 1 file", "sftp get", sftp_cmd(ctx, f"get {R}/src.bin {L}/get.bin"), None,
         L / "get.bin"),
        ("local→sftp tree", "aftd", aftd_cmd(ctx, "local", "remote", "tree", "t1"), None, R / "t1"),
        ("local→sftp tree", "rclone no-hash",
         [*rc, "--sftp-disable-hashcheck", str(L / "tree"), f"bench:{R}/t2"], renv, R / "t2"),
        ("local→sftp tree+verify", "aftd sha256",
         aftd_cmd(ctx, "local", "remote", "tree", "t3", verify="sha256"), None, R / "t3"),
        ("local→sftp tree+verify", "rclone md5", [*rc, str(L / "tree"), f"bench:{R}/t4"], renv,
         R / "t4"),
    ]


def remove(p: Path) -> None:
    if p.is_dir():
        shutil.rmtree(p)
    elif p.exists():
        p.unlink()


def rounds(plan: list[Case], rnd: int) -> list[Case]:
    """Alternate who goes first in each group: the first writer after a delete pays for fresh
    pages (these VMs hand freed memory back to the host), so no tool always gets that seat."""
    groups: dict[str, list[Case]] = {}
    for c in plan:
        groups.setdefault(c[0], []).append(c)
    out: list[Case] = []
    for members in groups.values():
        out.extend(reversed(members) if rnd % 2 else members)
    return out


def report(results: dict[tuple[str, str], list[dict[str, float]]], args: argparse.Namespace,
           ) -> None:
    print(f"\n{'group':<24} {'tool':<16} {'wall s':>7} {'MB/s':>7} {'files/s':>8} "
          f"{'CPU s':>6} {'RSS MB':>7} {'ratio':>6} {'ratio*':>7}")
    groups: dict[str, list[tuple[str, dict[str, float]]]] = {}
    for (group, tool), runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        groups.setdefault(group, []).append((tool, med))
    for group, rows in groups.items():
        rows.sort(key=lambda r: not r[0].startswith("aftd"))
        aftd_wall = rows[0][1]["wall"]
        aftd_copy = rows[0][1].get("copy_s", aftd_wall)
        tree = "tree" in group
        nbytes = args.files * args.file_kib * 1024 if tree else args.size_mib << 20
        for tool, m in rows:
            ratio, ratio_copy = m["wall"] / aftd_wall, m["wall"] / aftd_copy
            rate = f"{args.files / m['wall']:8.0f}" if tree else f"{'':>8}"
            print(f"{group:<24} {tool:<16} {m['wall']:7.2f} {nbytes / m['wall'] / 1e6:7.0f} "
                  f"{rate} {m['cpu']:6.2f} {m['rss_mb']:7.0f} "
                  + ("" if tool.startswith("aftd") else f"{ratio:6.2f}x {ratio_copy:6.2f}x"))
            if "copy_s" in m:
                print(f"{'':<24} {'(copy only)':<16} {m['copy_s']:7.2f} "
                      f"{nbytes / m['copy_s'] / 1e6:7.0f}")
    print("\nratio = reference wall time / aftd wall time (>1.0: aftd faster); ratio* uses "
          "aftd's copy time without interpreter start-up and imports (what a running daemon "
          f"pays); cipher {CIPHER}; medians of {args.runs} run(s).")


def main_parent(args: argparse.Namespace) -> None:
    for tool in ("sftp", "rclone", "cp", "/usr/bin/time"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is not installed")
    ctx = setup(args)
    try:
        plan = [c for c in cases(ctx) if not args.only or any(o in c[0] for o in args.only)]
        results: dict[tuple[str, str], list[dict[str, float]]] = {}
        for rnd in range(args.runs + 1):  # round 0 warms caches and is discarded
            for group, tool, cmd, env, output in rounds(plan, rnd):
                remove(output)
                r = run_measured(cmd, env)
                if rnd:
                    results.setdefault((group, tool), []).append(r)
                print(f"round {rnd} {group} / {tool}: {r['wall']:.2f} s", file=sys.stderr)
        report(results, args)
    finally:
        ctx["sshd"].kill()
        shutil.rmtree(ctx["work"], ignore_errors=True)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--file-kib", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workdir", default=None, help="parent of the scratch dir (default: TMPDIR)")
    ap.add_argument("--only", action="append", default=[],
                    help="run only groups whose name contains this (repeatable), e.g. sftp→local")
    ap.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio",
                    help="event loop for aftd's copies (uvloop must be installed)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for opt in ("port", "user", "key", "known-hosts", "local-root", "remote-root", "src", "dst",
                "path", "dest-dir", "verify"):
        ap.add_argument(f"--{opt}", help=argparse.SUPPRESS)
    ap.add_argument("--transfers", type=int, default=4, help=argparse.SUPPRESS)
    return ap.parse_args()


if __name__ == "__main__":
    a = parse_args()
    if a.child:
        a.port = int(a.port)
        if a.loop == "uvloop":
            import uvloop

            uvloop.run(child_copy(a))
        else:
            asyncio.run(child_copy(a))
    else:
        main_parent(a)
