"""The asyncssh speed-ups prove themselves on each connection and fall back loudly.

Against a real sshd: with the tested asyncssh every patch runs and its gauge is 1; a fast path
whose packets or requests differ from asyncssh's own (simulated by changing asyncssh's side)
is not installed, logs ``sftp_fast_path_disabled`` and sets its gauge to 0, and transfers stay
byte-identical through asyncssh's own code; an untested asyncssh version or
``AFTD_SFTP_FAST_PATH=off`` turns every patch off the same way.
"""

from __future__ import annotations

import os
from typing import Any

import asyncssh
import pytest
from structlog.testing import capture_logs

from aftd import metrics
from aftd.vfs import sftp_fastpath as fp
from aftd.vfs.sftp_send import _FAST_ATTR, tune_sftp_writes
from aftd.vfs.sftp_speed import tune_connection
from tests.fixtures.sshd import SshdServer

_MSG_IGNORE, _MSG_CHANNEL_DATA = 2, 94


def gauge(patch: str) -> float | None:
    return metrics.default_metrics.registry.get_sample_value(
        "aftd_sftp_fast_path", {"patch": patch})


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fp, "_warned", set())  # each test sees its own warnings
    monkeypatch.delenv(fp.ENV, raising=False)


async def _upload_and_compare(ssh_conn: asyncssh.SSHClientConnection, sshd: SshdServer,
                              name: str) -> None:
    """Pipelined writes through whatever send path the connection has; content must match."""
    sftp = await ssh_conn.start_sftp_client()
    tune_sftp_writes(sftp)
    data = os.urandom(3 << 20)
    path = f"{sshd.root}/{name}"
    async with sftp.open(path, "wb", block_size=0) as f:
        for off in range(0, len(data), 200_000):
            await f.write(data[off:off + 200_000], off)
    sftp.exit()
    with open(path, "rb") as fh:
        assert fh.read() == data


async def test_every_patch_passes_its_self_test_with_the_tested_asyncssh(
        ssh_conn: asyncssh.SSHClientConnection, sshd_a: SshdServer) -> None:
    assert fp.version_tested(), f"asyncssh {asyncssh.__version__} is not in the tested range"
    with capture_logs() as logs:
        tune_connection(ssh_conn)
        assert hasattr(ssh_conn, _FAST_ATTR)
        await _upload_and_compare(ssh_conn, sshd_a, "fast.bin")
    assert not [e for e in logs if e["event"] == "sftp_fast_path_disabled"]
    for patch in fp.PATCHES:
        assert gauge(patch) == 1, patch


async def test_a_send_path_that_differs_from_asyncssh_is_not_installed(
        ssh_conn: asyncssh.SSHClientConnection, sshd_a: SshdServer) -> None:
    """As if a new asyncssh sent a (valid) extra packet ahead of each data packet."""
    orig = ssh_conn.send_packet

    def changed(pkttype: int, *args: bytes, handler: Any = None) -> None:
        if pkttype == _MSG_CHANNEL_DATA:
            orig(_MSG_IGNORE, b"\0\0\0\1x")
        orig(pkttype, *args, handler=handler)

    ssh_conn.send_packet = changed  # type: ignore[method-assign]
    with capture_logs() as logs:
        tune_connection(ssh_conn)
        await _upload_and_compare(ssh_conn, sshd_a, "changed.bin")
    assert not hasattr(ssh_conn, _FAST_ATTR)
    warned = [e for e in logs if e["event"] == "sftp_fast_path_disabled"]
    assert [e["patch"] for e in warned] == ["gcm_send"]
    assert "self-test failed: packets differ" in warned[0]["reason"]
    assert warned[0]["log_level"] == "warning"
    assert gauge("gcm_send") == 0


async def test_a_write_request_that_differs_from_asyncssh_is_not_installed(
        ssh_conn: asyncssh.SSHClientConnection, sshd_a: SshdServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """As if a new asyncssh laid out FXP_WRITE differently: our builder must not be used."""
    tune_connection(ssh_conn)
    sftp = await ssh_conn.start_sftp_client()
    cls = type(sftp._handler)
    own = cls.write

    async def changed(self: Any, handle: bytes, offset: int, data: bytes) -> int:
        return await own(self, handle, offset, data + b"!")

    monkeypatch.setattr(cls, "write", changed)
    with capture_logs() as logs:
        tune_sftp_writes(sftp)
    monkeypatch.undo()
    assert "write" not in sftp._handler.__dict__  # asyncssh's own write stays
    warned = [e for e in logs if e["event"] == "sftp_fast_path_disabled"]
    assert [e["patch"] for e in warned] == ["sftp_write"]
    assert "write requests differ" in warned[0]["reason"]
    assert gauge("sftp_write") == 0
    sftp.exit()
    await _upload_and_compare(ssh_conn, sshd_a, "own-writes.bin")


@pytest.mark.parametrize("how", ["untested asyncssh", "switched off"])
async def test_untested_version_or_switch_turns_every_patch_off_loudly(
        ssh_conn: asyncssh.SSHClientConnection, sshd_a: SshdServer,
        monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    if how == "untested asyncssh":
        monkeypatch.setattr(fp.asyncssh, "__version__", "9.0.0")
    else:
        monkeypatch.setenv(fp.ENV, "off")
    send_packet = ssh_conn.send_packet
    with capture_logs() as logs:
        tune_connection(ssh_conn)
        await _upload_and_compare(ssh_conn, sshd_a, "off.bin")
    assert not hasattr(ssh_conn, _FAST_ATTR)
    assert ssh_conn.send_packet == send_packet
    assert "_send" not in ssh_conn.__dict__ and "data_received" not in ssh_conn.__dict__
    warned = {e["patch"]: e["reason"] for e in logs if e["event"] == "sftp_fast_path_disabled"}
    assert set(warned) == set(fp.PATCHES)
    want = "outside the tested range" if how == "untested asyncssh" else "turned off by"
    assert all(want in r for r in warned.values())
    for patch in fp.PATCHES:
        assert gauge(patch) == 0, patch


async def test_the_switch_can_keep_some_patches(
        ssh_conn: asyncssh.SSHClientConnection, sshd_a: SshdServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(fp.ENV, "coalesce_sends,keepalive_throttle")
    with capture_logs() as logs:
        tune_connection(ssh_conn)
        await _upload_and_compare(ssh_conn, sshd_a, "some.bin")
    assert "_send" in ssh_conn.__dict__ and not hasattr(ssh_conn, _FAST_ATTR)
    off = {e["patch"] for e in logs if e["event"] == "sftp_fast_path_disabled"}
    assert off == {"skip_ignore_padding", "gcm_send", "feed_whole_packets", "sftp_write",
                   "quiet_logs"}
    assert gauge("coalesce_sends") == 1 and gauge("gcm_send") == 0


def test_the_tested_range() -> None:
    low, high = fp.TESTED_ASYNCSSH
    assert fp.version_tested(".".join(map(str, low)))
    assert not fp.version_tested(".".join(map(str, high)))
    assert not fp.version_tested("2.13.0")
    assert fp.version_tested(asyncssh.__version__)


def test_the_pin_in_pyproject_matches_the_tested_range() -> None:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    high = ".".join(map(str, fp.TESTED_ASYNCSSH[1][:2]))
    low = ".".join(map(str, fp.TESTED_ASYNCSSH[0]))
    assert f"asyncssh>={low},<{high}" in text
