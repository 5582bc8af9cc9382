"""The systemd notification protocol (sd_notify), without a dependency.

systemd passes a datagram socket in ``NOTIFY_SOCKET`` (a filesystem path, or ``@name`` for the
Linux abstract namespace). The service sends newline-separated ``KEY=VALUE`` lines to it:
``READY=1`` once it serves, ``STATUS=`` for humans, ``RELOADING=1``/``READY=1`` around a
reload, ``STOPPING=1`` at shutdown, and ``WATCHDOG=1`` at least every ``WATCHDOG_USEC``.

Everything here is a no-op when ``NOTIFY_SOCKET`` is unset (running outside systemd, in tests,
from a shell). A failed send never raises into the daemon: readiness reporting must not be able
to take the service down. It is logged once per notifier, so a broken socket does not flood the
journal every watchdog tick.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Mapping

import structlog

__all__ = ["Notifier", "watchdog_loop"]

log = structlog.get_logger(__name__)


def _parse_address(raw: str) -> str | None:
    """Turn ``NOTIFY_SOCKET`` into a socket address, or None if we cannot use it."""
    if raw.startswith("@"):
        # Abstract namespace: the leading '@' stands for a NUL byte.
        return "\0" + raw[1:]
    if raw.startswith("/"):
        return raw
    # e.g. "vsock:..." (systemd >= 254 for VMs): not something a host daemon receives.
    return None


def _parse_usec(raw: str | None) -> int | None:
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if value > 0 else None


def _format_value(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    # A newline would start a new KEY=VALUE assignment and corrupt the message.
    return str(value).replace("\n", " ")


class Notifier:
    """Sends sd_notify messages; cheap to build, owns one non-blocking datagram socket."""

    def __init__(self, address: str | None = None, *, watchdog_usec: int | None = None) -> None:
        self._address = address
        self._watchdog_usec = watchdog_usec
        self._sock: socket.socket | None = None
        self._warned = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """Build from ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID``."""
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        address = _parse_address(raw) if raw else None
        if raw and address is None:
            log.warning("sd_notify_socket_unsupported", notify_socket=raw)
        usec = _parse_usec(env.get("WATCHDOG_USEC"))
        pid = env.get("WATCHDOG_PID")
        # The watchdog settings are meant for one process; a child that inherited them must
        # not ping on the parent's behalf.
        if pid and pid != str(os.getpid()):
            usec = None
        return cls(address, watchdog_usec=usec)

    @property
    def enabled(self) -> bool:
        """True when there is a socket to talk to."""
        return self._address is not None

    def notify(self, **fields: object) -> bool:
        """Send ``KEY=VALUE`` lines (keys upper-cased); True if the datagram went out."""
        if self._address is None or not fields:
            return False
        message = "\n".join(f"{k.upper()}={_format_value(v)}" for k, v in fields.items())
        return self._send(message.encode("utf-8"))

    def ready(self, status: str | None = None) -> bool:
        """Startup (or a reload) is complete; the service is serving."""
        if status is None:
            return self.notify(READY=1)
        return self.notify(READY=1, STATUS=status)

    def status(self, text: str) -> bool:
        """Free-form status shown by ``systemctl status``."""
        return self.notify(STATUS=text)

    def reloading(self) -> bool:
        """A reload started; follow with :meth:`ready` when it is done (or refused)."""
        # systemd >= 253 (Type=notify-reload) requires MONOTONIC_USEC to match the reload to
        # this message; older versions ignore the extra field.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify(RELOADING=1, MONOTONIC_USEC=usec)

    def stopping(self) -> bool:
        """Shutdown has begun."""
        return self.notify(STOPPING=1)

    def watchdog(self) -> bool:
        """Keep-alive ping for ``WatchdogSec=``."""
        return self.notify(WATCHDOG=1)

    def watchdog_interval(self) -> float | None:
        """Seconds between pings (half of ``WATCHDOG_USEC``), or None if there is no watchdog."""
        if self._address is None or self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 2 / 1_000_000

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _send(self, payload: bytes) -> bool:
        assert self._address is not None
        try:
            if self._sock is None:
                self._sock = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
                )
            self._sock.sendto(payload, self._address)
        except OSError as exc:
            self._warn_once(exc)
            return False
        return True

    def _warn_once(self, exc: OSError) -> None:
        if self._warned:
            return
        self._warned = True
        log.warning(
            "sd_notify_send_failed",
            notify_socket=self._address.replace("\0", "@") if self._address else None,
            error=f"{type(exc).__name__}: {exc}",
        )

    def __repr__(self) -> str:
        return f"Notifier(enabled={self.enabled}, watchdog_interval={self.watchdog_interval()})"


def _healthy(is_healthy: Callable[[], bool] | None) -> bool:
    if is_healthy is None:
        return True
    try:
        return bool(is_healthy())
    except Exception as exc:
        # An exploding health check is an unhealthy daemon, not a crashed watchdog task.
        log.warning("watchdog_health_check_failed", error=f"{type(exc).__name__}: {exc}")
        return False


async def watchdog_loop(
    notifier: Notifier, is_healthy: Callable[[], bool] | None = None
) -> None:
    """Ping the watchdog every :meth:`Notifier.watchdog_interval` until cancelled.

    The pings come from the event loop itself, so a blocked loop stops them and systemd
    restarts the service. While ``is_healthy()`` returns False the pings are withheld for the
    same effect. Returns at once when there is no watchdog.
    """
    interval = notifier.watchdog_interval()
    if interval is None:
        return
    was_healthy = True
    while True:
        healthy = _healthy(is_healthy)
        if healthy:
            notifier.watchdog()
        elif was_healthy:
            log.warning("watchdog_withheld", reason="health check failed")
        if healthy and not was_healthy:
            log.info("watchdog_resumed")
        was_healthy = healthy
        await asyncio.sleep(interval)
