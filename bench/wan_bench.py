"""SFTP at WAN latency: aftd, OpenSSH ``sftp`` and rclone through one latency relay, same run.

    python bench/wan_bench.py [--runs 3] [--rtts 0,20,100] [--tree-rtts 0,20] [--size-mib 256]
                              [--files 1000] [--file-kib 64] [--aftd-opts '{"streams": 4}']
                              [--trees-only]

A private OpenSSH sshd (tests/fixtures/sshd.py) sits behind ``bench/latency_relay.py`` (a child
process delaying each direction by RTT/2); every tool connects to the relay, so every tool sees
the same path. Per RTT it copies one large file up and down and (at ``--tree-rtts``) a tree of
small files up and down (``--trees-only``: only the trees), with:

* aftd: a child process copying with ``VfsHandle.copy_to`` between a local and an sftp VFS with
  the backend's default settings (``--aftd-opts`` adds keys to the sftp entry);
* OpenSSH ``sftp`` with its defaults (``-R 64 -B 32768``) and with large requests
  (``-R 256 -B 261120``, the largest sftp-server accepts);
  (``transfers="auto"``: the number of files in flight grows while throughput rises);
* rclone with ``--transfers 4`` and, for the large file, ``--multi-thread-streams 4``
  (``--multi-thread-cutoff 16M``); hash checks off for rclone and verification off for aftd.

All use cipher aes128-gcm@openssh.com. At RTT 0 the large-file copies also run straight to sshd
without the relay ("direct"), which shows what the relay itself costs. Figures are medians of
``--runs`` with their range; "ratio" is the other tool's time / aftd's copy time (> 1: aftd is
faster; aftd's copy time leaves out interpreter start-up, what a running daemon pays), "ratio
wall" uses aftd's whole process time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

import vfs_bench  # noqa: E402  (a sibling script, not a package)

Case = tuple[str, str, list[str], dict[str, str] | None, Path]
SFTP_TUNED = ("-R", "256", "-B", "261120")
# (group, RTT ms, wanted ratio, against tool) from the targets in the README's performance section.
TARGETS = (("up 1 file", 100, 3.0, "sftp default"), ("down 1 file", 100, 3.0, "sftp default"),
           ("up 1 file", 100, 1.5, "rclone"), ("down 1 file", 100, 1.5, "rclone"),
           ("up 1 file", 20, 2.0, "sftp default"), ("down 1 file", 20, 2.0, "sftp default"),
           ("up tree", 20, 2.0, "rclone"), ("up tree", 0, 1.5, "rclone"),
           ("down tree", 20, 2.0, "rclone"), ("down tree", 0, 1.5, "rclone"))


class Relay:
    """``bench/latency_relay.py`` as a child process in front of sshd."""

    def __init__(self, target_port: int, rtt_ms: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(BENCH / "latency_relay.py"), "--target",
             f"127.0.0.1:{target_port}", "--rtt-ms", str(rtt_ms)], stdout=subprocess.PIPE,
            text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("listening "):
            self.proc.kill()
            raise RuntimeError(f"relay did not start: {line!r}")
        self.port = int(line.split()[1])

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def setup(args: argparse.Namespace) -> dict[str, Any]:
    from tests.fixtures.sshd import start_sshd

    work = Path(tempfile.mkdtemp(prefix="aftd-wan-", dir=args.workdir))
    local = work / "local"
    local.mkdir()
    sshd = start_sshd(work / "sshd", extra_config=vfs_bench.SSHD_EXTRA)
    vfs_bench.write_dataset(local, sshd.root, args)
    (work / "rclone.conf").write_text("")
    return {"work": work, "local": local, "sshd": sshd, "loop": "asyncio",
            "secrets": vfs_bench.write_private(work / "secrets.json",
                                               {"k": sshd.user_key_text})}


def endpoint(ctx: dict[str, Any], port: int, args: argparse.Namespace) -> dict[str, Any]:
    """What each tool needs to reach sshd through ``port``: aftd entries, known_hosts, env."""
    s, work = ctx["sshd"], ctx["work"]
    kh = work / f"known_hosts_{port}"
    kh.write_text(s.known_hosts_line.replace(f"]:{s.port} ", f"]:{port} ") + "\n")
    remote = {"type": "sftp", "host": "127.0.0.1", "port": port, "user": s.user,
              "key_secret": "k", "known_hosts": str(kh), "root": str(s.root),
              **json.loads(args.aftd_opts)}
    entries = {"local": {"type": "local", "root": str(ctx["local"])}, "remote": remote}
    env = vfs_bench.rclone_env(ctx)
    env.update({"RCLONE_CONFIG_BENCH_PORT": str(port),
                "RCLONE_CONFIG_BENCH_KNOWN_HOSTS_FILE": str(kh)})
    return {"entries": vfs_bench.write_private(work / f"entries_{port}.json", entries),
            "kh": kh, "port": port, "env": env}


def sftp(ctx: dict[str, Any], ep: dict[str, Any], batch: str, *opts: str) -> list[str]:
    s = ctx["sshd"]
    bf = ctx["work"] / f"batch{abs(hash(batch))}"
    bf.write_text(batch + "\n")
    return ["sftp", "-q", *opts, "-b", str(bf), "-i", str(s.user_key), "-P", str(ep["port"]),
            "-o", f"UserKnownHostsFile={ep['kh']}", "-o", f"Ciphers={vfs_bench.CIPHER}",
            "-o", "BatchMode=yes", "-F", "/dev/null", f"{s.user}@127.0.0.1"]


def aftd(ctx: dict[str, Any], ep: dict[str, Any], src: str, dst: str, path: str,
         dest: str) -> list[str]:
    return vfs_bench.aftd_cmd({**ctx, "entries": ep["entries"]}, src, dst, path, dest)


def big_cases(ctx: dict[str, Any], ep: dict[str, Any], tag: str) -> list[Case]:
    L, R = ctx["local"], ctx["sshd"].root
    rc = ["rclone", "copyto", "--transfers", "4", "--multi-thread-streams", "4",
          "--multi-thread-cutoff", "16M", "--sftp-disable-hashcheck"]
    up, down = f"up 1 file{tag}", f"down 1 file{tag}"
    out: list[Case] = [
        (up, "aftd", aftd(ctx, ep, "local", "remote", "big.bin", "a_up"), None, R / "a_up"),
        (up, "sftp default", sftp(ctx, ep, f"put {L}/big.bin {R}/s_up"), None, R / "s_up"),
        (down, "aftd", aftd(ctx, ep, "remote", "local", "src.bin", "a_down"), None,
         L / "a_down"),
        (down, "sftp default", sftp(ctx, ep, f"get {R}/src.bin {L}/s_down"), None,
         L / "s_down"),
    ]
    if tag:  # the direct rows only show the relay's own cost
        return out
    return [*out,
            (up, "sftp -R256 -B255k", sftp(ctx, ep, f"put {L}/big.bin {R}/t_up", *SFTP_TUNED),
             None, R / "t_up"),
            (up, "rclone", [*rc, str(L / "big.bin"), f"bench:{R}/r_up"], ep["env"], R / "r_up"),
            (down, "sftp -R256 -B255k",
             sftp(ctx, ep, f"get {R}/src.bin {L}/t_down", *SFTP_TUNED), None, L / "t_down"),
            (down, "rclone", [*rc, f"bench:{R}/src.bin", str(L / "r_down")], ep["env"],
             L / "r_down")]


def tree_cases(ctx: dict[str, Any], ep: dict[str, Any]) -> list[Case]:
    L, R = ctx["local"], ctx["sshd"].root
    rc = ["rclone", "copy", "--transfers", "4", "--checkers", "8", "--sftp-disable-hashcheck"]
    return [
        ("up tree", "aftd", aftd(ctx, ep, "local", "remote", "tree", "a_tree"), None,
         R / "a_tree"),
        ("up tree", "rclone", [*rc, str(L / "tree"), f"bench:{R}/r_tree"], ep["env"],
         R / "r_tree"),
        ("down tree", "aftd", aftd(ctx, ep, "remote", "local", "srctree", "a_dtree"), None,
         L / "a_dtree"),
        ("down tree", "rclone", [*rc, f"bench:{R}/srctree", str(L / "r_dtree")], ep["env"],
         L / "r_dtree"),
    ]


Results = dict[tuple[int, str, str], list[dict[str, float]]]


def run_rtt(ctx: dict[str, Any], args: argparse.Namespace, rtt: int, results: Results) -> None:
    relay = Relay(ctx["sshd"].port, rtt)
    try:
        plan = [] if args.trees_only else big_cases(ctx, endpoint(ctx, relay.port, args), "")
        if rtt == 0 and not args.trees_only:
            plan += big_cases(ctx, endpoint(ctx, ctx["sshd"].port, args), " direct")
        if rtt in args.tree_rtts:
            plan += tree_cases(ctx, endpoint(ctx, relay.port, args))
        for rnd in range(1, args.runs + 1):
            for group, tool, cmd, env, output in vfs_bench.rounds(plan, rnd):
                vfs_bench.remove(output)
                r = vfs_bench.run_measured(cmd, env)
                r["load1"] = os.getloadavg()[0]
                results.setdefault((rtt, group, tool), []).append(r)
                print(f"RTT {rtt} ms round {rnd} {group} / {tool}: {r['wall']:.2f} s",
                      file=sys.stderr)
                vfs_bench.remove(output)
    finally:
        relay.stop()


def summarise(results: Results) -> dict[tuple[int, str], dict[str, dict[str, float]]]:
    """Per (RTT, group) and tool: medians, ranges (of the time that counts) and load."""
    out: dict[tuple[int, str], dict[str, dict[str, float]]] = {}
    for (rtt, group, tool), runs in results.items():
        times = [r.get("copy_s", r["wall"]) for r in runs]
        out.setdefault((rtt, group), {})[tool] = {
            "time": statistics.median(times), "min": min(times), "max": max(times),
            "wall": statistics.median(r["wall"] for r in runs),
            "cpu": statistics.median(r["cpu"] for r in runs),
            "rss": statistics.median(r["rss_mb"] for r in runs),
            "load": statistics.median(r["load1"] for r in runs)}
    return out


def report(summary: dict[tuple[int, str], dict[str, dict[str, float]]],
           args: argparse.Namespace) -> None:
    print(f"\n{'RTT':>4} {'group':<20} {'tool':<18} {'time s':>7} {'range':>13} {'MB/s':>6} "
          f"{'CPU s':>6} {'RSS':>5} {'load':>5} {'ratio':>6} {'ratio wall':>10}")
    for (rtt, group), tools in sorted(summary.items()):
        nbytes = (args.files * args.file_kib << 10) if "tree" in group else args.size_mib << 20
        a = tools.get("aftd")
        for tool, m in sorted(tools.items(), key=lambda t: t[0] != "aftd"):
            ratio = "" if a is None or tool == "aftd" else (
                f"{m['time'] / a['time']:5.2f}x {m['time'] / a['wall']:9.2f}x")
            print(f"{rtt:>4} {group:<20} {tool:<18} {m['time']:7.2f} "
                  f"{m['min']:6.2f}-{m['max']:<6.2f} {nbytes / m['time'] / 1e6:6.0f} "
                  f"{m['cpu']:6.2f} {m['rss']:5.0f} {m['load']:5.2f} {ratio}")
    print("\ntargets (ratio = tool time / aftd copy time):")
    for group, rtt, want, tool in TARGETS:
        tools = summary.get((rtt, group), {})
        if "aftd" not in tools or tool not in tools:
            continue
        got = tools[tool]["time"] / tools["aftd"]["time"]
        print(f"  {group} at {rtt} ms vs {tool}: {got:.2f}x (target >= {want}x) "
              f"{'met' if got >= want else 'MISSED'}")
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nload average at the end (1/5/15 min): {load}; medians of {args.runs} run(s); "
          f"{args.size_mib} MiB file, {args.files} x {args.file_kib} KiB tree")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rtts", default="0,20,100", help="round trips to emulate, ms")
    ap.add_argument("--tree-rtts", default="0,20", help="round trips for the small-file tree")
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--file-kib", type=int, default=64)
    ap.add_argument("--aftd-opts", default="{}", help="JSON keys added to aftd's sftp entry")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--trees-only", action="store_true", help="skip the large-file copies")
    args = ap.parse_args()
    args.tree_rtts = [int(x) for x in args.tree_rtts.split(",") if x]
    for tool in ("sftp", "rclone", "/usr/bin/time"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is not installed")
    ctx = setup(args)
    results: Results = {}
    try:
        rtts = args.tree_rtts if args.trees_only else [int(x) for x in args.rtts.split(",")]
        for rtt in rtts:
            run_rtt(ctx, args, rtt, results)
        report(summarise(results), args)
    finally:
        ctx["sshd"].kill()
        shutil.rmtree(ctx["work"], ignore_errors=True)


if __name__ == "__main__":
    main()
