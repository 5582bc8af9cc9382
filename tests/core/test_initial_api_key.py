"""The API key generated when none is configured: printed on a terminal only, otherwise written
to ``state_dir/initial-api-key`` (0600) with a log line that names the file, never the key."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pty
import re
import select
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aftd.apikeys import INITIAL_KEY_FILE, hand_over_initial_key
from tests.fixtures.daemon import Api, DaemonProcess


async def test_without_a_terminal_the_key_goes_to_a_private_file(
        make_daemon: Callable[..., Any]) -> None:
    d: DaemonProcess = await make_daemon(api_keys="")
    key_file = d.state_dir / INITIAL_KEY_FILE
    key = key_file.read_text().strip()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key not in d.logs()
    line = next(json.loads(ln) for ln in d.logs().splitlines() if "api_key_generated" in ln)
    assert line["path"] == str(key_file)
    assert (d.state_dir / "api_key.sha256").read_text().strip() == \
        hashlib.sha256(key.encode()).hexdigest()
    api = Api(d, key=key)
    try:
        status, _ = await api.request("GET", "/v1/jobs")
        assert status == 200
    finally:
        await api.close()


def test_hand_over_replaces_a_stale_file_and_keeps_it_private(tmp_path: Path) -> None:
    stale = tmp_path / INITIAL_KEY_FILE
    stale.write_text("old key\n")
    stale.chmod(0o644)
    path = hand_over_initial_key(tmp_path, "aft_new-key-value", io.StringIO())
    assert path == stale
    assert stale.read_text() == "aft_new-key-value\n"
    assert stat.S_IMODE(stale.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [INITIAL_KEY_FILE]  # no temp left


class PtyReader:
    """Drains the terminal side of a pty (a full pty would block the daemon's writes)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.data = b""
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if not ready:
                continue
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:  # EIO: the daemon closed its side
                return
            if not chunk:
                return
            self.data += chunk

    def wait_for(self, needle: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while needle not in self.text():
            assert proc.poll() is None, self.text()
            assert time.monotonic() < deadline, self.text()
            time.sleep(0.05)
        return self.text()

    def join(self) -> None:
        self._thread.join(10)

    def text(self) -> str:
        return self.data.decode(errors="replace")


async def test_on_a_terminal_the_key_is_printed_and_no_file_is_written(
        make_daemon: Callable[..., Any]) -> None:
    d: DaemonProcess = await make_daemon(api_keys="", start=False)
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "aftd.cli.aftd_main", "serve", "--config", str(d.config_path)],
        stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=d.env)
    os.close(slave)
    reader = PtyReader(master)
    try:
        text = reader.wait_for("api_listening", proc)
        m = re.search(r"generated API key .*: (aft_[A-Za-z0-9_-]+)", text)
        assert m, text
        key = m.group(1)
        assert (d.state_dir / "api_key.sha256").read_text().strip() == \
            hashlib.sha256(key.encode()).hexdigest()
        assert not (d.state_dir / INITIAL_KEY_FILE).exists()
        assert '"shown_on": "terminal"' in text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        reader.join()
        os.close(master)
