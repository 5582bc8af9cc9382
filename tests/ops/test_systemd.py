"""The systemd unit: verify, the hardening score, consistency with the daemon's defaults,
and the sysusers/tmpfiles snippets applied to a scratch root."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from aftd.config import JobsConfig
from aftd.shutdown import SHUTDOWN_OVERHEAD_S

MAX_EXPOSURE = 2.0
INSTALLED_BINARY = "/opt/aftd/venv/bin/aftd"


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


def _unit(repo_root: Path) -> Path:
    return repo_root / "systemd" / "aftd.service"


def _directives(unit: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def _verifiable_copy(unit: Path, tmp_path: Path) -> Path:
    """The unit with ExecStart pointed at a binary that exists here.

    ``systemd-analyze verify`` fails when the ExecStart binary is missing, and the unit names
    the production path /opt/aftd/venv/bin/aftd, which a CI machine does not have.
    """
    true_bin = shutil.which("true")
    assert true_bin is not None
    text = unit.read_text()
    assert INSTALLED_BINARY in text
    copy = tmp_path / "aftd.service"
    copy.write_text(text.replace(INSTALLED_BINARY, true_bin))
    return copy


def test_unit_verifies_cleanly(
    repo_root: Path, tmp_path: Path, require_binary: Callable[[str], str]
) -> None:
    analyze = require_binary("systemd-analyze")
    done = _run([analyze, "verify", str(_verifiable_copy(_unit(repo_root), tmp_path))])
    assert done.returncode == 0, done.stderr
    # verify reports unknown keys and bad values on stderr even when it exits 0.
    assert done.stdout.strip() == ""
    assert done.stderr.strip() == ""


def test_verify_catches_a_broken_unit(
    repo_root: Path, tmp_path: Path, require_binary: Callable[[str], str]
) -> None:
    # Proves the check above can fail: a typo in a directive must be reported.
    analyze = require_binary("systemd-analyze")
    copy = _verifiable_copy(_unit(repo_root), tmp_path)
    copy.write_text(copy.read_text().replace("Type=notify", "Type=notifyy"))
    done = _run([analyze, "verify", str(copy)])
    assert "notifyy" in done.stdout + done.stderr


def test_exposure_score_is_at_most_two(
    repo_root: Path, require_binary: Callable[[str], str]
) -> None:
    analyze = require_binary("systemd-analyze")
    args = [analyze, "security", "--offline=true", "--no-pager", str(_unit(repo_root))]
    done = _run(args)
    assert done.returncode == 0, done.stderr
    match = re.search(r"Overall exposure level for aftd\.service: (\d+\.\d+)", done.stdout)
    assert match, done.stdout
    assert float(match.group(1)) <= MAX_EXPOSURE, done.stdout
    # systemd's own gate agrees (threshold is on its 0-100 scale).
    gated = _run([*args, f"--threshold={int(MAX_EXPOSURE * 10)}"])
    assert gated.returncode == 0


def test_unit_matches_the_daemon_contract(repo_root: Path) -> None:
    d = _directives(_unit(repo_root))
    assert d["Type"] == ["notify"]
    assert d["NotifyAccess"] == ["main"]
    assert d["ExecStart"] == [f"{INSTALLED_BINARY} serve --config /etc/aftd/aftd.toml"]
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert d["User"] == ["aftd"]
    assert "DynamicUser" not in d
    assert d["StateDirectory"] == ["aftd"]
    assert d["ConfigurationDirectory"] == ["aftd"]
    assert d["CapabilityBoundingSet"] == [""]
    assert d["ProtectSystem"] == ["strict"]
    assert "/var/lib/aftd" in d["ReadWritePaths"][0].split()
    # SIGKILL must not land inside the bounded shutdown: grace plus every later step.
    stop_s = float(d["TimeoutStopSec"][0].removesuffix("s"))
    assert stop_s >= JobsConfig().shutdown_grace_s + SHUTDOWN_OVERHEAD_S
    assert d["LimitCORE"] == ["0"]
    # The watchdog is pinged at half the interval; it must be a plain number of seconds.
    assert float(d["WatchdogSec"][0].removesuffix("s")) > 0


def test_sysusers_and_tmpfiles_snippets_apply(
    repo_root: Path, tmp_path: Path, require_binary: Callable[[str], str]
) -> None:
    sysusers = require_binary("systemd-sysusers")
    tmpfiles = require_binary("systemd-tmpfiles")
    for kind in ("sysusers", "tmpfiles"):
        target = tmp_path / "usr" / "lib" / f"{kind}.d"
        target.mkdir(parents=True)
        shutil.copy(repo_root / "systemd" / f"aftd.{kind}.conf", target / "aftd.conf")
    (tmp_path / "etc").mkdir()
    done = _run([sysusers, f"--root={tmp_path}"])
    assert done.returncode == 0, done.stderr
    passwd = (tmp_path / "etc" / "passwd").read_text().splitlines()
    entry = next(line.split(":") for line in passwd if line.startswith("aftd:"))
    assert entry[5:] == ["/var/lib/aftd", "/usr/sbin/nologin"]
    if os.geteuid() != 0:
        pytest.skip("systemd-tmpfiles needs root to chown inside a scratch root")
    done = _run([tmpfiles, f"--root={tmp_path}", "--create"])
    assert done.returncode == 0, done.stderr
    conf = (tmp_path / "etc" / "aftd").stat()
    assert (conf.st_uid, conf.st_gid, conf.st_mode & 0o7777) == (0, int(entry[3]), 0o750)
    assert (tmp_path / "etc" / "aftd" / "scripts").is_dir()
