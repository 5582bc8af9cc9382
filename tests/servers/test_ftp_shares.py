"""vsftpd's FTP roots live in /tmp (pytest's directories are closed to the `ftp` user), so a
run killed before its teardown leaves them behind: the next vsftpd start removes those."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.fixtures.ftp import remove_stale_shares


def _share(tmp: Path, name: str, owner: int | None, age_s: float = 0) -> Path:
    share = tmp / f"aftd-vsftpd-{name}"
    (share / "root").mkdir(parents=True)
    (share / "root" / "data.bin").write_bytes(b"x" * 1000)
    if owner is not None:
        (share / "owner.pid").write_text(f"{owner}\n")
    if age_s:
        then = time.time() - age_s
        os.utime(share, (then, then))
    return share


def test_only_the_shares_of_finished_runs_are_removed(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead = int(done.stdout)  # that process has exited
    finished = _share(tmp_path, "finished", dead)
    running = _share(tmp_path, "running", os.getpid(), age_s=7200)
    old_unowned = _share(tmp_path, "old", None, age_s=7200)
    new_unowned = _share(tmp_path, "new", None)
    other = tmp_path / "aftd-bench-x"
    other.mkdir()
    removed = remove_stale_shares(tmp_path)
    assert sorted(removed) == sorted([finished, old_unowned])
    assert not finished.exists() and not old_unowned.exists()
    assert running.exists() and new_unowned.exists() and other.exists()
