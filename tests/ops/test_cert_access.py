"""The README promises that the ``aftd`` group can read the generated certificate while the
service runs with ``UMask=0077``; these tests hold the daemon to it."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from aftd.tls import ensure_self_signed
from tests.fixtures.daemon import DaemonProcess

NOBODY = 65534


def _modes(state_dir: Path) -> tuple[int, int, int]:
    tls = state_dir / "tls"
    return tuple(p.stat().st_mode & 0o777 for p in  # type: ignore[return-value]
                 (tls, tls / "cert.pem", tls / "key.pem"))


def test_generated_files_modes_under_umask_0077(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        ensure_self_signed(tmp_path)
    finally:
        os.umask(old)
    assert _modes(tmp_path) == (0o755, 0o644, 0o600)


def _can_read(path: Path, uid: int, gid: int) -> bool:
    """Whether a process of ``uid``:``gid`` (no other groups) can read ``path``."""
    # /bin/cat: the test's Python may live where another user cannot run it (under /root).
    done = subprocess.run(["/bin/cat", str(path)], user=uid, group=gid, extra_groups=[],
                          capture_output=True)
    return done.returncode == 0


async def test_state_dir_group_reads_the_cert_not_the_key() -> None:
    """A daemon started with umask 0077 in a 0750 state dir (what StateDirectoryMode=0750
    makes): a member of the state dir's group reads the certificate, not the key; anyone else
    reads neither. An old install's 0700 tls directory is repaired at the next start."""
    if os.geteuid() != 0:
        pytest.skip("switching to another uid needs root")
    # Outside pytest's 0700 temporary tree, so that other users can reach it at all.
    root = Path(tempfile.mkdtemp(prefix="aftd-cert-"))
    os.chmod(root, 0o711)  # noqa: S103 - traversable, like /var/lib
    d = DaemonProcess(root)
    try:
        d.state_dir.mkdir(mode=0o750)
        os.chmod(d.state_dir, 0o750)  # noqa: S103 - StateDirectoryMode=0750
        for attempt in ("fresh", "repaired"):
            await _start_with_umask_0077(d)
            cert, key = d.state_dir / "tls" / "cert.pem", d.state_dir / "tls" / "key.pem"
            assert _modes(d.state_dir) == (0o755, 0o644, 0o600), attempt
            group = d.state_dir.stat().st_gid
            assert _can_read(cert, NOBODY, group), attempt
            assert not _can_read(key, NOBODY, group), attempt
            assert not _can_read(cert, NOBODY, NOBODY), attempt
            d.stop()
            # What an earlier version left behind under UMask=0077.
            os.chmod(d.state_dir / "tls", 0o700)
            os.chmod(cert, 0o600)
    finally:
        d.stop()
        shutil.rmtree(root, ignore_errors=True)


async def _start_with_umask_0077(d: DaemonProcess) -> None:
    old = os.umask(0o077)  # inherited by the daemon process, as systemd's UMask= would set it
    try:
        await d.start()
    finally:
        os.umask(old)
