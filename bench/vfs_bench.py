"""VFS copy benchmark: aftd side by side with OpenSSH sftp, cp and rclone, in one run.

    python bench/vfs_bench.py [--size-mib 1024] [--files 1000] [--file-kib 64] [--runs 3]
                              [--only 'sftp→local' ...] [--skip verify ...]

Everything runs over loopback against a private OpenSSH sshd (tests/fixtures/sshd.py), for
the ``ftps`` groups a private vsftpd with TLS and TLS session reuse required (tests/fixtures/
ftp.py; needs root), and for the object stores SeaweedFS, Azurite and fake-gcs-server as the
tests start them (bench/blob_targets.py), rclone copying to the same server in the same run
(``--only s3``, ``--only azure``, ``--only gcs`` run those alone; ``--baseline-repo DIR``
also runs every aftd copy with another checkout's aftd, in the same rounds, and ``--json F``
keeps every run's figures; ``--rtt-ms 20`` puts
bench/latency_relay.py in front of them, for aftd and rclone alike). Each copy runs in its own
child process so its peak RSS (from wait4) is its own; aftd's copy runs in a child of this
script (``--child``). Printed
figures are medians of ``--runs``; ratios are "aftd throughput / reference throughput" (> 1.0
means aftd is faster). Shared, noisy machines: compare only the ratios of one run, never
absolute figures across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.blob_targets import KINDS, BlobTarget, start_targets  # noqa: E402

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
    from aftd.configmodel import Section
    from aftd.vfs.config import parse_vfs_section
    from aftd.vfs.handle import VfsHandle
    from aftd.vfs.registry import VfsPool

    entries = json.loads(Path(args.entries).read_text())
    values = json.loads(Path(args.secrets).read_text())

    class Secrets:
        async def get(self, name: str) -> str:
            return str(values[name])

    pool = VfsPool(parse_vfs_section(Section(entries, "bench", "vfs")), Secrets())
    src, dst = VfsHandle(pool.get(args.src)), pool.get(args.dst)
    t0, cpu0 = time.perf_counter(), _cpu_s()
    res = await src.copy_to(args.path, dst, args.dest_dir, overwrite="always",
                            verify=args.verify or None, transfers=args.transfers)
    took, cpu = time.perf_counter() - t0, _cpu_s() - cpu0
    await pool.aclose()
    print(json.dumps({"copy_s": took, "copy_cpu": cpu, "bytes": res.bytes, "files": res.files}))


def _cpu_s() -> float:
    """User + system CPU seconds of this process so far (all its threads)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _transfers(value: str) -> int | str:
    return value if value == "auto" else int(value)


def aftd_cmd(ctx: dict[str, Any], src: str, dst: str, path: str, dest_dir: str,
             verify: str = "", transfers: int | str = "auto") -> list[str]:
    return [sys.executable, __file__, "--child", "--entries", str(ctx["entries"]),
            "--secrets", str(ctx["secrets"]), "--src", src, "--dst", dst, "--path", path,
            "--dest-dir", dest_dir, "--verify", verify, "--transfers", str(transfers),
            "--loop", ctx["loop"]]


def write_private(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    path.chmod(0o600)
    return path


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
    env.update({
        "RCLONE_CONFIG": str(ctx["work"] / "rclone.conf"),
        "RCLONE_CONFIG_BENCH_TYPE": "sftp", "RCLONE_CONFIG_BENCH_HOST": "127.0.0.1",
        "RCLONE_CONFIG_BENCH_PORT": str(s.port), "RCLONE_CONFIG_BENCH_USER": s.user,
        "RCLONE_CONFIG_BENCH_KEY_FILE": str(s.user_key),
        "RCLONE_CONFIG_BENCH_KNOWN_HOSTS_FILE": str(s.known_hosts),
    })
    return env


# -- the parent ---------------------------------------------------------------------------
# A minimal session for the benchmark user: no rc files, motd or lastlog at login.
SSHD_EXTRA = "PermitUserRC no\nSetEnv BASH_ENV=\n"


def write_dataset(local: Path, remote: Path, args: argparse.Namespace) -> None:
    """``local/big.bin`` (``size_mib``, each MiB numbered) and ``local/tree`` (``files`` small
    files), and their download sources ``src.bin`` and ``srctree`` in ``remote``."""
    block = os.urandom(1 << 20)
    with (local / "big.bin").open("wb") as f:
        for i in range(args.size_mib):
            f.write(i.to_bytes(8, "big") + block[8:])
    tree = local / "tree"
    for i in range(args.files):
        d = tree / f"d{i % 10}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:05d}.dat").write_bytes(os.urandom(args.file_kib * 1024))
    os.link(local / "big.bin", remote / "src.bin")
    shutil.copytree(tree, remote / "srctree")


def setup(args: argparse.Namespace) -> dict[str, Any]:
    from tests.fixtures.sshd import start_sshd

    work = Path(tempfile.mkdtemp(prefix="aftd-bench-", dir=args.workdir))
    local = work / "local"
    local.mkdir()
    sshd = start_sshd(work / "sshd", extra_config=SSHD_EXTRA)
    write_dataset(local, sshd.root, args)
    entries: dict[str, Any] = {
        "local": {"type": "local", "root": str(local)},
        "remote": {"type": "sftp", "host": "127.0.0.1", "port": sshd.port, "user": sshd.user,
                   "key_secret": "k", "known_hosts": str(sshd.known_hosts),
                   "root": str(sshd.root)}}
    secrets = {"k": sshd.user_key_text}
    ctx: dict[str, Any] = {"work": work, "local": local, "sshd": sshd, "loop": args.loop,
                           "ftp": None, "blob": {}}
    if not args.only or any("ftps" in o for o in args.only):
        ftp = ctx["ftp"] = setup_ftps(work, local)
        entries["ftps"] = ftp.vfs_options()
        entries["ftps4"] = ftp.vfs_options(streams=4)  # parallel ranged downloads
        entries["ftps1"] = ftp.vfs_options(streams=1)  # downloads on one stream
        secrets.update(ftp.secrets)
    (work / "rclone.conf").write_text("")
    kinds = [k for k in KINDS if not args.only or any(k in o for o in args.only)]
    if kinds:
        ctx["blob"] = start_targets(work, kinds, local, rclone_env(ctx))
        for t in ctx["blob"].values():
            if args.rtt_ms:
                t.through_relay(args.rtt_ms)
            entries[t.kind] = t.entry
            entries[t.kind + "1"] = {**t.entry, "streams": 1}  # downloads on one stream
            secrets.update(t.secrets)
    ctx["entries"] = write_private(work / "entries.json", entries)
    ctx["secrets"] = write_private(work / "secrets.json", secrets)
    return ctx


def setup_ftps(work: Path, local: Path) -> Any:
    """vsftpd (TLS and TLS session reuse required) with the download sources in its root."""
    from tests.fixtures.ftp import start_vsftpd

    ftp = start_vsftpd(work / "vsftpd")
    assert ftp.owner is not None
    os.link(local / "big.bin", ftp.root / "src.bin")
    shutil.copytree(local / "tree", ftp.root / "srctree")
    for p in [ftp.root / "src.bin", ftp.root / "srctree", *(ftp.root / "srctree").rglob("*")]:
        os.chown(p, *ftp.owner)
    return ftp


def rclone_ftps_env(ctx: dict[str, Any]) -> dict[str, str]:
    """rclone's ftp backend on the same vsftpd: explicit TLS with TLS 1.3 off (rclone's TLS 1.3
    data connections fail vsftpd's checks: "tls: illegal parameter" (1.60) or "426 Failure
    reading network stream" at the end of every upload (1.75)); it keeps its TLS session cache
    for the data connections, which vsftpd's require_ssl_reuse needs."""
    ftp = ctx["ftp"]
    obscured = subprocess.run(["rclone", "obscure", ftp.password], capture_output=True,
                              text=True, check=True).stdout.strip()
    env = dict(os.environ)
    env.update({
        "RCLONE_CONFIG": str(ctx["work"] / "rclone.conf"),
        "RCLONE_CONFIG_FTPS_TYPE": "ftp", "RCLONE_CONFIG_FTPS_HOST": ftp.host,
        "RCLONE_CONFIG_FTPS_PORT": str(ftp.port), "RCLONE_CONFIG_FTPS_USER": ftp.user,
        "RCLONE_CONFIG_FTPS_PASS": obscured, "RCLONE_CONFIG_FTPS_EXPLICIT_TLS": "true",
        "RCLONE_CONFIG_FTPS_NO_CHECK_CERTIFICATE": "true",
        "RCLONE_CONFIG_FTPS_DISABLE_TLS13": "true",
    })
    return env


Output = Path | Callable[[], None]
Case = tuple[str, str, list[str], dict[str, str] | None, Output]


def blob_cases(ctx: dict[str, Any], t: BlobTarget) -> list[Case]:
    """aftd against rclone on one object store: 1 file and the tree, up and down, each with
    verification off for both tools and on for both; the download of 1 file also with both
    tools on one stream (aftd ``streams = 1``, rclone ``--multi-thread-streams 0``)."""
    L, k = ctx["local"], t.kind
    env = rclone_env(ctx)
    rc = ["rclone", "copy", "--transfers", "4", "--checkers", "8", *t.rclone_flags]
    out: list[Case] = []
    for verify in (False, True):
        tag, v = ("+verify", "sha256") if verify else ("", "")
        rflags = [] if verify else t.rclone_verify_off()
        aftd_tool, rc_tool = ("aftd sha256", "rclone md5") if verify else ("aftd", "rclone")
        out += [
            (f"local→{k} 1 file{tag}", aftd_tool, aftd_cmd(ctx, "local", k, "big.bin", "up",
                                                           verify=v), None, _purge(t, "up")),
            (f"local→{k} 1 file{tag}", rc_tool, [*rc, *rflags, str(L / "big.bin"),
                                                 t.remote("rup")], env, _purge(t, "rup")),
            (f"{k}→local 1 file{tag}", aftd_tool, aftd_cmd(ctx, k, "local", "src/big.bin",
                                                           f"{k}down", verify=v), None,
             L / f"{k}down"),
            (f"{k}→local 1 file{tag}", rc_tool, [*rc, *rflags, t.remote("src/big.bin"),
                                                 str(L / f"{k}rdown")], env, L / f"{k}rdown"),
            *([] if verify else [  # what the parallel ranges are worth: both on one stream
                (f"{k}→local 1 file", "aftd 1 stream", aftd_cmd(ctx, k + "1", "local",
                                                               "src/big.bin", f"{k}down1"),
                 None, L / f"{k}down1"),
                (f"{k}→local 1 file", "rclone 1 stream",
                 [*rc, *rflags, "--multi-thread-streams", "0", t.remote("src/big.bin"),
                  str(L / f"{k}rdown1")], env, L / f"{k}rdown1")]),
            (f"local→{k} tree{tag}", aftd_tool, aftd_cmd(ctx, "local", k, "tree", "t1",
                                                         verify=v), None, _purge(t, "t1")),
            (f"local→{k} tree{tag}", rc_tool, [*rc, *rflags, str(L / "tree"), t.remote("t2")],
             env, _purge(t, "t2")),
            (f"{k}→local tree{tag}", aftd_tool, aftd_cmd(ctx, k, "local", "src/tree",
                                                         f"{k}tdown", verify=v), None,
             L / f"{k}tdown"),
            (f"{k}→local tree{tag}", rc_tool, [*rc, *rflags, t.remote("src/tree"),
                                               str(L / f"{k}rtdown")], env, L / f"{k}rtdown"),
        ]
    return out


def _purge(t: BlobTarget, path: str) -> Callable[[], None]:
    def purge() -> None:
        subprocess.run(["rclone", "purge", t.remote(path), *t.rclone_flags],
                       env={**os.environ, "RCLONE_CONFIG": "/dev/null"}, capture_output=True,
                       check=False)

    return purge


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
        ("sftp→local tree", "aftd", aftd_cmd(ctx, "remote", "local", "srctree", "dt1"), None,
         L / "dt1"),
        ("sftp→local tree", "rclone no-hash",
         [*rc, "--sftp-disable-hashcheck", f"bench:{R}/srctree", str(L / "dt2")], renv,
         L / "dt2"),
        ("local→sftp tree+verify", "aftd sha256",
         aftd_cmd(ctx, "local", "remote", "tree", "t3", verify="sha256"), None, R / "t3"),
        ("local→sftp tree+verify", "rclone md5", [*rc, str(L / "tree"), f"bench:{R}/t4"], renv,
         R / "t4"),
        *(ftps_cases(ctx) if ctx["ftp"] is not None else []),
        *(c for t in ctx["blob"].values() for c in blob_cases(ctx, t)),
    ]


def ftps_cases(ctx: dict[str, Any]) -> list[Case]:
    """1 GiB up and down and the tree up and down, each with verification off for both tools
    and on for both: aftd's verify="sha256" (a read-back: vsftpd has no hash command) against
    rclone copy followed by ``rclone check --download`` (rclone's read-back). The 1 GiB download
    also runs rclone on a single stream (``--multi-thread-streams 0``), and aftd on 4 parallel
    ranged streams (``streams = 4``) against rclone's default (4 streams for such a file)."""
    L, F = ctx["local"], ctx["ftp"].root
    env = rclone_ftps_env(ctx)
    opts = ["--transfers", "4", "--checkers", "8"]

    def sh(*cmds: list[str]) -> list[str]:
        return ["sh", "-c", " && ".join(" ".join(shlex.quote(x) for x in c) for c in cmds)]

    # (group, aftd src, path, aftd dest dir, rclone copy, rclone check, outputs)
    plans = [
        ("local→ftps 1 file", "local", "big.bin", "fup",
         ["copyto", str(L / "big.bin"), "ftps:rup/big.bin"],
         ["--include", "/big.bin", str(L), "ftps:rup"], F / "fup", F / "rup"),
        ("ftps→local 1 file", "ftps", "src.bin", "fdown",
         ["copyto", "ftps:src.bin", str(L / "rdown" / "src.bin")],
         ["--include", "/src.bin", "ftps:", str(L / "rdown")], L / "fdown", L / "rdown"),
        ("local→ftps tree", "local", "tree", "ft1", ["copy", str(L / "tree"), "ftps:ft2"],
         [str(L / "tree"), "ftps:ft2"], F / "ft1", F / "ft2"),
        ("ftps→local tree", "ftps", "srctree", "fdt1",
         ["copy", "ftps:srctree", str(L / "fdt2")], ["ftps:srctree", str(L / "fdt2")],
         L / "fdt1", L / "fdt2"),
    ]
    out: list[Case] = []
    for verify in ("", "sha256"):
        for group, src, path, dest, copy, check, a_out, r_out in plans:
            dst = "local" if src == "ftps" else "ftps"
            rcopy = ["rclone", copy[0], *opts, *copy[1:]]
            name = group + ("+verify" if verify else "")
            out.append((name, "aftd sha256" if verify else "aftd",
                        aftd_cmd(ctx, src, dst, path, dest, verify), None, a_out))
            if verify:
                out.append((name, "rclone+check", sh(
                    rcopy, ["rclone", "check", "--download", "--checkers", "8", *check]),
                    env, r_out))
            else:
                out.append((name, "rclone", rcopy, env, r_out))
            if not verify and group == "ftps→local 1 file":
                # rclone splits a big download to local disk into 4 ranged streams written at
                # their offsets; aftd does so with `streams = 4`. Both on one stream, and aftd
                # on 4, show what that is worth.
                out.append((name, "rclone 1 stream", [*rcopy, "--multi-thread-streams", "0"],
                            env, r_out))
                out.append((name, "aftd 1 stream",
                            aftd_cmd(ctx, "ftps1", "local", path, dest + "1"), None,
                            L / (dest + "1")))
                four = "ftps→local 1 file, 4 streams"
                out.append((four, "aftd 4 streams",
                            aftd_cmd(ctx, "ftps4", "local", path, dest + "4"), None,
                            L / (dest + "4")))
                out.append((four, "rclone", rcopy, env, r_out))
    return out


def remove(p: Output) -> None:
    if callable(p):
        p()
    elif p.is_dir():
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
        # aftd's default first (the ratios compare with it), its one-stream variant after it
        rows.sort(key=lambda r: (not r[0].startswith("aftd"), "(before)" in r[0],
                                 "1 stream" in r[0]))
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
                      f"{nbytes / m['copy_s'] / 1e6:7.0f} {'':>8} {m['copy_cpu']:6.2f}")
    if args.rtt_ms:
        print(f"\nobject stores reached through bench/latency_relay.py at {args.rtt_ms:g} ms RTT")
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nload average at the end (1/5/15 min): {load}")
    print("\nratio = reference wall time / aftd wall time (>1.0: aftd faster); ratio* uses "
          "aftd's copy time without interpreter start-up and imports (what a running daemon "
          "pays), and the CPU s on its (copy only) line is the copy's alone; "
          f"cipher {CIPHER}; medians of {args.runs} run(s).")


def with_baseline(plan: list[Case], repo: Path) -> list[Case]:
    """Each aftd case also run by another checkout's aftd (tool "... (before)"), against the
    same servers in the same rounds: a change measured against its base."""
    out: list[Case] = []
    for group, tool, cmd, env, output in plan:
        out.append((group, tool, cmd, env, output))
        if tool.startswith("aftd"):
            other = [str(repo / "bench" / "vfs_bench.py") if c == __file__ else c for c in cmd]
            out.append((group, f"{tool} (before)", other, env, output))
    return out


def main_parent(args: argparse.Namespace) -> None:
    for tool in ("sftp", "rclone", "cp", "/usr/bin/time"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is not installed")
    ctx = setup(args)
    try:
        plan = [c for c in cases(ctx) if (not args.only or any(o in c[0] for o in args.only))
                and not any(o in c[0] for o in args.skip)]
        if args.baseline_repo:
            plan = with_baseline(plan, Path(args.baseline_repo))
        results: dict[tuple[str, str], list[dict[str, float]]] = {}
        for rnd in range(args.runs + 1):  # round 0 warms caches and is discarded
            for group, tool, cmd, env, output in rounds(plan, rnd):
                remove(output)
                r = run_measured(cmd, env)
                if rnd:
                    results.setdefault((group, tool), []).append(r)
                print(f"round {rnd} {group} / {tool}: {r['wall']:.2f} s", file=sys.stderr)
        report(results, args)
        if args.json:
            Path(args.json).write_text(json.dumps(
                {"load": os.getloadavg(), "results": [
                    {"group": g, "tool": t, "runs": r} for (g, t), r in results.items()]}))
    finally:
        ctx["sshd"].kill()
        if ctx["ftp"] is not None:
            ctx["ftp"].stop()
            shutil.rmtree(ctx["ftp"].root.parent, ignore_errors=True)
        for target in ctx["blob"].values():
            target.stop()
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
    ap.add_argument("--skip", action="append", default=[],
                    help="leave out groups whose name contains this (repeatable), e.g. verify")
    ap.add_argument("--rtt-ms", type=float, default=0.0,
                    help="object stores only: reach them (aftd and rclone alike) through "
                    "bench/latency_relay.py adding this round trip")
    ap.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio",
                    help="event loop for aftd's copies (uvloop must be installed)")
    ap.add_argument("--baseline-repo", default="",
                    help="also run each aftd copy with this checkout's aftd (\"(before)\")")
    ap.add_argument("--json", default="", help="write every run's figures to this file")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for opt in ("entries", "secrets", "src", "dst", "path", "dest-dir", "verify"):
        ap.add_argument(f"--{opt}", help=argparse.SUPPRESS)
    ap.add_argument("--transfers", type=_transfers, default="auto", help=argparse.SUPPRESS)
    return ap.parse_args()


if __name__ == "__main__":
    a = parse_args()
    if a.child:
        if a.loop == "uvloop":
            import uvloop

            uvloop.run(child_copy(a))
        else:
            asyncio.run(child_copy(a))
    else:
        main_parent(a)
