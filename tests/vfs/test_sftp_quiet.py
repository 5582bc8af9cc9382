"""The ``quiet_logs`` speed-up skips only log formatting that asyncssh would throw away.

Against a real sshd: with asyncssh's logger at WARNING a quieted session writes nothing and
transfers intact; with debug logging switched on at run time the same session writes what
asyncssh writes (request messages, packet dumps at debug level 3); an asyncssh whose logging
differs from what the patch assumes (simulated) fails the self-test, and the patch is not used,
loudly.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import asyncssh
import pytest
from asyncssh.logging import SSHLogger
from structlog.testing import capture_logs

from aftd import metrics
from aftd.vfs import sftp_fastpath as fp
from aftd.vfs import sftp_quiet
from aftd.vfs.sftp_speed import tune_connection
from tests.fixtures.sshd import SshdServer


def gauge() -> float | None:
    return metrics.default_metrics.registry.get_sample_value(
        "aftd_sftp_fast_path", {"patch": sftp_quiet.PATCH})


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fp, "_warned", set())
    monkeypatch.setattr(sftp_quiet, "_checked", [])  # the self-test runs again in each test
    monkeypatch.delenv(fp.ENV, raising=False)


@pytest.fixture
def asyncssh_lines() -> Iterator[_Lines]:
    """Everything asyncssh's logger writes, at the level the test sets (WARNING to start)."""
    logger = logging.getLogger("asyncssh")
    old_level, lines = logger.level, _Lines()
    logger.addHandler(lines)
    logger.setLevel(logging.WARNING)
    yield lines
    logger.removeHandler(lines)
    logger.setLevel(old_level)
    SSHLogger.set_debug_level(1)


async def _round_trip(sftp: asyncssh.SFTPClient, sshd: SshdServer, name: str) -> None:
    data = os.urandom(200_000)  # one request: sftp-server takes up to 255 KiB
    path = f"{sshd.root}/{name}"
    async with sftp.open(path, "wb", block_size=0) as f:
        await f.write(data, 0)
    async with sftp.open(path, "rb", block_size=0) as f:
        assert await f.read(len(data), 0) == data


async def test_quiet_session_writes_what_asyncssh_writes_at_every_level(
        ssh_conn: asyncssh.SSHClientConnection, sshd_a: SshdServer,
        asyncssh_lines: _Lines) -> None:
    tune_connection(ssh_conn)
    sftp = await ssh_conn.start_sftp_client()
    sftp_quiet.quiet_session(sftp)
    assert gauge() == 1
    assert isinstance(sftp._handler.logger, sftp_quiet._QuietLogger)

    await _round_trip(sftp, sshd_a, "quiet.bin")
    assert asyncssh_lines.lines == []  # WARNING: asyncssh has nothing to say either

    logging.getLogger("asyncssh").setLevel(logging.DEBUG)  # switched on at run time
    await _round_trip(sftp, sshd_a, "debug.bin")
    assert any("Sending read for 200000 bytes at offset 0 in handle" in ln
               for ln in asyncssh_lines.lines)
    assert not any("Sent FXP_" in ln for ln in asyncssh_lines.lines)  # dumps need level 3

    asyncssh_lines.lines.clear()
    SSHLogger.set_debug_level(3)
    await _round_trip(sftp, sshd_a, "dump.bin")
    sent = [ln for ln in asyncssh_lines.lines if "Sent FXP_READ" in ln]
    assert sent and "00000000:" in sent[0]  # the packet dump asyncssh writes at level 3
    assert any("Received FXP_DATA" in ln for ln in asyncssh_lines.lines)
    sftp.exit()


async def test_logging_that_differs_from_asyncssh_is_not_quieted(
        ssh_conn: asyncssh.SSHClientConnection, sshd_a: SshdServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """As if a new asyncssh wrote packet dumps from debug level 2: skipping them below level 3
    would lose log lines, so the self-test must fail and leave asyncssh's logging alone."""
    own_packet = SSHLogger.packet

    def from_level_2(self: SSHLogger, pktid: int | None, packet: bytes, msg: str,
                     *args: object, **kwargs: object) -> None:
        if self._debug_level == 2:
            self.log(logging.DEBUG, msg, *args)
        own_packet(self, pktid, packet, msg, *args, **kwargs)

    monkeypatch.setattr(SSHLogger, "packet", from_level_2)
    with capture_logs() as logs:
        tune_connection(ssh_conn)
        sftp = await ssh_conn.start_sftp_client()
        sftp_quiet.quiet_session(sftp)
    monkeypatch.undo()
    assert "log_sent_packet" not in ssh_conn.__dict__ and "log_sent_packet" not in vars(
        sftp._handler)
    assert not isinstance(sftp._handler.logger, sftp_quiet._QuietLogger)
    warned = [e for e in logs if e["event"] == "sftp_fast_path_disabled"]
    assert {e["patch"] for e in warned} == {"quiet_logs"}
    assert "self-test failed: at level DEBUG, debug level 2" in warned[0]["reason"]
    assert gauge() == 0
    await _round_trip(sftp, sshd_a, "own-logs.bin")
    sftp.exit()


async def test_switched_off_leaves_asyncssh_logging_alone(
        ssh_conn: asyncssh.SSHClientConnection, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(fp.ENV, "gcm_send,sftp_write")
    tune_connection(ssh_conn)
    sftp = await ssh_conn.start_sftp_client()
    sftp_quiet.quiet_session(sftp)
    assert "log_received_packet" not in ssh_conn.__dict__
    assert not isinstance(sftp._handler.logger, sftp_quiet._QuietLogger)
    assert gauge() == 0
    sftp.exit()
