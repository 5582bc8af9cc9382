"""Skip asyncssh's debug-log formatting when the log line would be thrown away (``quiet_logs``).

asyncssh formats a debug message for every SFTP request and reply ("Sending read for 261120
bytes at offset ..."), and describes every SSH and SFTP packet it sends or receives, before
the logging layer decides to drop them: ``SSHLogger.log`` converts each argument to text ahead
of ``LoggerAdapter.log``'s level check, and ``_log_packet`` builds a packet's name and size
before ``SSHLogger.packet`` checks for debug level 3. On a copy that is a few percent of the
CPU, for nothing: aftd runs asyncssh at log level WARNING unless told otherwise.

Here, on one connection, its SFTP channel and SFTP session (never the classes):

* the logger is swapped for a subclass whose ``log`` asks ``isEnabledFor`` first; when the
  answer is yes it runs asyncssh's own ``log``, so enabled messages come out unchanged;
* ``log_sent_packet`` / ``log_received_packet`` return at once unless the logger's debug level
  is 3, the only level at which asyncssh's ``SSHLogger.packet`` writes anything; at level 3
  they are asyncssh's own methods.

Both are re-checked on every call, so turning asyncssh's debug logging on at run time works as
before. A self-test (once per process) runs asyncssh's own code and the quiet code on a private
logger at each level and requires the same records (none where asyncssh writes none).
"""

from __future__ import annotations

import logging
from typing import Any

import asyncssh
from asyncssh.logging import SSHLogger
from asyncssh.packet import SSHPacket, SSHPacketLogger

from aftd.vfs import sftp_fastpath as fp

__all__ = ["check_quiet_logs", "quiet_connection", "quiet_session"]

PATCH = "quiet_logs"
_PACKET_LEVEL = 3  # asyncssh writes packet logs only at debug level 3 (SSHLogger.packet)
_checked: list[str] = []  # the self-test's outcome once run ("" when it passed)


def quiet_connection(conn: asyncssh.SSHClientConnection) -> None:
    """Quiet the connection's own logger and packet logs (call once, right after connecting)."""
    if _ready():
        _quiet(conn)


def quiet_session(sftp: asyncssh.SFTPClient) -> None:
    """Quiet an SFTP session: its request/reply messages and its channel's packet logs."""
    if not _ready():
        return
    try:
        handler: Any = sftp._handler  # internals: typed loosely on purpose
        channel = handler._writer.channel
    except AttributeError as exc:
        fp.disabled(PATCH, f"asyncssh internals changed: {exc}")
        return
    _quiet(handler)
    _quiet(channel)


def _ready() -> bool:
    """May the patch run here: allowed, and its self-test passed (run once per process)."""
    if not fp.allowed(PATCH):
        return False
    if not _checked:
        _checked.append(check_quiet_logs())
    if _checked[0]:
        fp.disabled(PATCH, f"self-test failed: {_checked[0]}")
        return False
    fp.active(PATCH)
    return True


def _quiet(obj: Any) -> None:
    """Swap ``obj``'s logger for the quiet one and guard its packet logging."""
    logger = getattr(obj, "_logger", None)
    if not isinstance(logger, SSHLogger) or not callable(
            getattr(obj, "log_sent_packet", None)):
        fp.disabled(PATCH, f"asyncssh internals changed: {type(obj).__name__} has no "
                    "SSHLogger or packet logging")
        return
    if not isinstance(logger, _QuietLogger):
        obj._logger = _quieter(logger)
    obj.log_sent_packet = _guarded(obj, obj.log_sent_packet)
    obj.log_received_packet = _guarded(obj, obj.log_received_packet)


class _QuietLogger(SSHLogger):
    """asyncssh's logger, minus the argument formatting of messages that are dropped anyway.

    ``LoggerAdapter.log`` drops a message when ``isEnabledFor(level)`` is false; asyncssh's
    ``log`` formats the arguments first. Asking first changes only that the formatting, which
    has no effect of its own, is skipped. ``get_child`` builds ``type(self)``: children stay
    quiet."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if self.isEnabledFor(level):
            super().log(level, msg, *args, **kwargs)


def _quieter(logger: SSHLogger) -> _QuietLogger:
    """A quiet logger with ``logger``'s state (underlying logger, context)."""
    quiet = _QuietLogger.__new__(_QuietLogger)
    quiet.__dict__.update(logger.__dict__)
    return quiet


def _guarded(obj: Any, log_packet: Any) -> Any:
    """``log_packet`` (a bound packet-log method of ``obj``), run only at debug level 3."""

    def log_if_level_3(pkttype: int, pktid: int | None, packet: Any, note: str = "") -> None:
        if obj.logger._debug_level >= _PACKET_LEVEL:
            log_packet(pkttype, pktid, packet, note)

    return log_if_level_3


class _Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelno} {record.getMessage()}")


class _Probe(SSHPacketLogger):
    """Something that logs packets the way asyncssh's connection, channel and SFTP do."""

    _handler_names = {7: "PROBE"}

    def __init__(self, logger: SSHLogger) -> None:
        self._logger = logger

    @property
    def logger(self) -> SSHLogger:
        return self._logger


def check_quiet_logs() -> str:
    """Self-test: at each Python log level and asyncssh debug level, asyncssh's own logger and
    packet logging, and their quiet versions, write the same records. Uses a private logger
    (nothing reaches the application's logs). Returns what differs, or "" when all match."""
    base = logging.getLogger("aftd.selftest.quiet_logs")
    base.propagate = False
    recorder = _Recorder()
    base.addHandler(recorder)
    try:
        for level in (logging.DEBUG, logging.INFO, logging.WARNING):
            base.setLevel(level)
            for debug_level in (1, 2, 3):
                own = _records(base, recorder, debug_level, quiet=False)
                quiet = _records(base, recorder, debug_level, quiet=True)
                if own != quiet:
                    return (f"at level {logging.getLevelName(level)}, debug level "
                            f"{debug_level}: asyncssh wrote {own!r}, the quiet path {quiet!r}")
    except Exception as exc:  # any failure means: leave asyncssh's logging alone
        return f"{type(exc).__name__}: {exc}"
    finally:
        base.removeHandler(recorder)
    return ""


def _records(base: logging.Logger, recorder: _Recorder, debug_level: int, *,
             quiet: bool) -> list[str]:
    """What one round of typical asyncssh log calls writes, through either path."""
    logger = SSHLogger(base, context="selftest")
    logger._debug_level = debug_level  # this instance only: asyncssh's level stays as it is
    probe = _Probe(_quieter(logger) if quiet else logger)
    if quiet:
        _quiet(probe)
    recorder.lines.clear()
    log = probe.logger
    log.debug1("Sending read for %s at offset %d in handle %s", "7 bytes", 42, b"\x01h")
    log.debug1("Received %s", ["a", b"b\xff"])
    log.debug2("Forwarding %s", ("host", 22))
    log.info("Closing %s", b"chan")
    log.warning("Odd %s", 1)
    probe.log_sent_packet(7, 3, b"\x07payload")
    probe.log_received_packet(8, None, SSHPacket(b"\x08reply"), "note")
    child = log.get_child("sub", "ctx")
    child.debug1("child %s", b"x")
    return list(recorder.lines)
