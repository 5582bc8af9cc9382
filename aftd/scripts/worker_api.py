"""The worker process's side of the job API: what runs in the child but is answered by the daemon.

:class:`Channel` carries frames (see :mod:`aftd.scripts.ipc`) over the control socket. A reader
thread receives the daemon's replies, so an end of stream (the daemon died) ends the worker at
once, even while the script blocks its event loop, instead of leaving an orphan that keeps
transferring. Sends are synchronous under a lock: any thread may log.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import threading
import time
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

from aftd.errors import SecretError
from aftd.logging import level_number, route_stdlib
from aftd.redact import scrub
from aftd.scripts.ipc import ProtocolError, decode, encode, error_from_wire, frame_length
from aftd.secrets.chain import register_value

__all__ = ["EXIT_ORPHANED", "Channel", "ProgressForwarder", "RemoteOutbox", "RemoteSecrets",
           "configure_logging", "wire_value"]

# The daemon went away: the worker exits with this code without finishing the script.
EXIT_ORPHANED = 70


class _Waiter:
    """One outstanding call, answered from the reader thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[dict[str, Any]] = loop.create_future()

    def resolve(self, reply: dict[str, Any]) -> None:
        self.loop.call_soon_threadsafe(_settle, self.future, reply)


def _settle(future: asyncio.Future[dict[str, Any]], reply: dict[str, Any]) -> None:
    if not future.done():
        future.set_result(reply)


class Channel:
    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._wlock = threading.Lock()
        self._ids = itertools.count(1)
        self._waiters: dict[int, _Waiter] = {}
        self._reader = threading.Thread(target=self._read_loop, name="aftd-worker-ipc",
                                        daemon=True)

    def start(self) -> None:
        self._reader.start()

    def send(self, msg: dict[str, Any]) -> None:
        data = encode(msg)
        with self._wlock:
            self._sock.sendall(data)

    async def call(self, op: str, args: Mapping[str, Any]) -> Any:
        """Ask the daemon; the event loop keeps running while the answer is pending."""
        call_id = next(self._ids)
        waiter = _Waiter(asyncio.get_running_loop())
        self._waiters[call_id] = waiter
        self.send({"t": "call", "id": call_id, "op": op, "args": dict(args)})
        reply = await waiter.future
        if "error" in reply:
            raise error_from_wire(reply["error"])
        return reply.get("value")

    def _read_loop(self) -> None:
        try:
            while True:
                msg = self._read()
                if msg is None:
                    break
                waiter = self._waiters.pop(msg.get("id", -1), None) \
                    if msg.get("t") == "reply" else None
                if waiter is not None:
                    waiter.resolve(msg)
        except (OSError, ProtocolError):
            pass
        # The daemon closed the channel or died: nothing this process does can be reported.
        os._exit(EXIT_ORPHANED)

    def _read(self) -> dict[str, Any] | None:
        header = self._recv_exactly(4)
        if header is None:
            return None
        body = self._recv_exactly(frame_length(header))
        if body is None:
            raise ProtocolError("stream ended inside a frame")
        return decode(body)

    def _recv_exactly(self, n: int) -> bytes | None:
        buf = bytearray()
        while len(buf) < n:
            chunk = self._sock.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return bytes(buf)


class RemoteSecrets:
    """``job.secret(name)`` and VFS connect-time secrets, resolved by the daemon's chain."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel

    def __repr__(self) -> str:
        return "RemoteSecrets()"

    async def get(self, name: str) -> str:
        value = await self._channel.call("secret", {"name": name})
        if not isinstance(value, str):
            raise SecretError(f"secret {name!r}: the daemon answered with no value")
        register_value(value)  # this process's logs and errors mask it too
        return value


class RemoteOutbox:
    """The outbox calls of the claim helpers; the intents live in the daemon's store."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel

    async def record_intent(self, job_id: str, *, url: str, token_secret: str | None,
                            failure_body: Mapping[str, Any], idempotency_key: str) -> int:
        value = await self._channel.call("outbox.record_intent", {
            "job_id": job_id, "url": url, "token_secret": token_secret,
            "failure_body": dict(failure_body), "idempotency_key": idempotency_key})
        if not isinstance(value, int) or isinstance(value, bool):
            raise ProtocolError("the daemon answered record_intent without a report id")
        return value

    async def void_intent(self, report_id: int) -> bool:
        return bool(await self._channel.call("outbox.void_intent", {"report_id": report_id}))

    async def submit(self, report_id: int, body: Mapping[str, Any]) -> None:
        await self._channel.call("outbox.submit", {"report_id": report_id, "body": dict(body)})


class ProgressForwarder:
    """The copy engine's progress sink; sends totals at most every ``interval_s`` and on flush."""

    def __init__(self, channel: Channel, interval_s: float = 0.25) -> None:
        self._channel = channel
        self._interval = interval_s
        self._sent_at = 0.0
        self._dirty = False
        self.files_total = self.bytes_total = self.files_done = self.bytes_done = 0

    def add_total(self, files: int = 0, nbytes: int = 0) -> None:
        self.files_total += files
        self.bytes_total += nbytes
        self._changed()

    def advance(self, files: int = 0, nbytes: int = 0) -> None:
        self.files_done += files
        self.bytes_done += nbytes
        self._changed()

    def _changed(self) -> None:
        self._dirty = True
        if time.monotonic() - self._sent_at >= self._interval:
            self.flush()

    def flush(self) -> None:
        if not self._dirty:
            return
        self._dirty, self._sent_at = False, time.monotonic()
        self._channel.send({"t": "progress", "files_total": self.files_total,
                            "bytes_total": self.bytes_total, "files_done": self.files_done,
                            "bytes_done": self.bytes_done})

    def transfer_finished(self, src_vfs: str, dst_vfs: str, files: int, nbytes: int,
                          ok: bool) -> None:
        self.flush()
        self._channel.send({"t": "transfer", "src": src_vfs, "dst": dst_vfs, "files": files,
                            "bytes": nbytes, "ok": ok})


# -- logging ---------------------------------------------------------------------------------

def wire_value(value: Any) -> Any:
    """A log value as JSON, scrubbed; anything else is rendered to text first."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else str(value)
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, Mapping):
        return {scrub(str(k)): wire_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [wire_value(v) for v in value]
    return scrub(str(value))


def configure_logging(level: str, channel: Channel) -> None:
    """Every structlog event (and stdlib warnings) of the worker becomes a ``log`` frame."""

    def send(_: Any, method: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
        name = str(event.pop("event", ""))
        lvl = str(event.pop("level", method))
        fields = {str(k): wire_value(v) for k, v in event.items()}
        channel.send({"t": "log", "level": lvl, "event": scrub(name), "fields": fields})
        raise structlog.DropEvent

    structlog.configure(
        processors=[structlog.processors.add_log_level,
                    structlog.processors.StackInfoRenderer(),
                    structlog.processors.format_exc_info, send],
        wrapper_class=structlog.make_filtering_bound_logger(level_number(level)),
        cache_logger_on_first_use=False,
    )
    route_stdlib(level)
