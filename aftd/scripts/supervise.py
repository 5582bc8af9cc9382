"""One worker process's life, seen from the daemon: start it, relay its log, output, progress
and calls, and end it (SIGTERM, then SIGKILL) when the job is cancelled.

The worker is untrusted: every frame is checked before it reaches the job's log, progress or
metrics (:mod:`aftd.scripts.worker_requests` checks its calls); a malformed frame ends it with
an error naming the problem.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from aftd import progress
from aftd.scripts.context import JobRecord, Services
from aftd.scripts.execute import Outcome
from aftd.scripts.ipc import ProtocolError, encode, error_to_wire, read_frame
from aftd.scripts.outcome import check_outcome, verdict
from aftd.scripts.worker_requests import WorkerRequests
from aftd.stdio import feed_job_output, flush_job_output

__all__ = ["Supervisor", "wait_readable"]

log = structlog.get_logger("aftd.isolation")

MpCall = Callable[..., Awaitable[Any]]

_MAX_PENDING_CALLS = 64
_MAX_UNREAD_REPLIES = 8 << 20
_DRAIN_S = 2.0  # after the worker exits, how long its output may still trickle in
_LEVELS = frozenset({"debug", "info", "warning", "error", "critical"})
# Keys the daemon's own pipeline sets; a worker must not forge them (another job's id!).
_RESERVED = frozenset({"event", "level", "timestamp", "job_id", "script_id", "request_id",
                       "service", "version", "host", "logger", "exc_info", "stack_info"})


class Supervisor:
    """Create it, hand :meth:`child_ends` to the new process, then ``await run(start)``."""

    def __init__(self, mp_call: MpCall, job: JobRecord, jlog: Any, services: Services,
                 grace_s: float) -> None:
        self._mp_call = mp_call
        self._job, self._jlog, self._services, self._grace = job, jlog, services, grace_s
        self._ctrl, ctrl = socket.socketpair()
        self._out, out = socket.socketpair()
        self._err, err = socket.socketpair()
        self._child = (ctrl, out, err)
        self._proc: Any = None
        self._exited: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._calls: set[asyncio.Task[None]] = set()
        self._writer: asyncio.StreamWriter | None = None
        self._outcome: dict[str, Any] | None = None
        self._broken: str | None = None
        self._requests = WorkerRequests(job, services)
        self._seen = {"files_total": 0, "bytes_total": 0, "files_done": 0, "bytes_done": 0}
        self.exitcode: int | None = None

    def child_ends(self) -> tuple[socket.socket, socket.socket, socket.socket]:
        return self._child

    # -- lifecycle ------------------------------------------------------------------------
    async def run(self, start: Callable[[], Awaitable[Any]]) -> Outcome:
        try:
            await self._start(start)
        except Exception as exc:
            self._close_sockets()
            return Outcome("failed", None,
                           f"cannot start a worker process: {type(exc).__name__}: {exc}")
        except asyncio.CancelledError:
            self._close_sockets()
            raise
        try:
            await self._supervise()
        except asyncio.CancelledError:
            await self._stop()
            raise
        finally:
            await self._cleanup()
        return verdict(self._outcome, self.exitcode, self._broken)

    async def _start(self, start: Callable[[], Awaitable[Any]]) -> None:
        starting = asyncio.ensure_future(start())
        try:
            self._proc = await asyncio.shield(starting)
        except asyncio.CancelledError:
            # Cancelled while forking: the process may exist all the same; end it.
            with contextlib.suppress(Exception):
                self._proc = await starting
                self._signal(signal.SIGKILL)
            raise
        finally:
            for s in self._child:  # the worker has its own copies now
                s.close()
        log.debug("worker_started", pid=self._proc.pid)
        self._exited = asyncio.create_task(wait_readable(self._proc.sentinel))
        self._tasks = [asyncio.create_task(self._serve()),
                       asyncio.create_task(self._pump(self._out, "stdout")),
                       asyncio.create_task(self._pump(self._err, "stderr"))]

    async def _supervise(self) -> None:
        assert self._exited is not None
        await asyncio.wait({self._exited, self._tasks[0]}, return_when=asyncio.FIRST_COMPLETED)
        if not self._exited.done():
            # The channel ended ("done" sent) or broke: the worker has no business left.
            if self._broken is None:
                await asyncio.wait({self._exited}, timeout=self._grace)
            if not self._exited.done():
                self._signal(signal.SIGKILL)
                await asyncio.wait({self._exited})
        await asyncio.wait(self._tasks, timeout=_DRAIN_S)

    async def _stop(self) -> None:
        """Cancelled: SIGTERM (the script's finally blocks run, calls are still answered),
        then SIGKILL after the grace period."""
        if self._exited is None or self._exited.done():
            return
        log.info("worker_stopping", pid=self._proc.pid, grace_s=self._grace)
        self._signal(signal.SIGTERM)
        await asyncio.wait({self._exited}, timeout=self._grace)
        if not self._exited.done():
            log.warning("worker_killed", pid=self._proc.pid,
                        reason=f"still running {self._grace} s after SIGTERM")
            self._signal(signal.SIGKILL)
            await asyncio.wait({self._exited}, timeout=10)

    async def _cleanup(self) -> None:
        """Whatever happened: no worker, task, socket or sentinel is left behind."""
        assert self._exited is not None
        self._signal(signal.SIGKILL)  # a no-op once the worker is known to be gone
        try:
            await asyncio.wait({self._exited}, timeout=10)
        finally:
            # The exit watcher too: its reader must be off the sentinel before _reap closes it.
            tasks = [*self._tasks, *self._calls, self._exited]
            for task in tasks:
                task.cancel()
            if self._writer is not None:
                self._writer.close()
            await asyncio.gather(*tasks, return_exceptions=True)
            flush_job_output(self._job.id)  # a last line printed without a newline
            self._close_sockets()
            self.exitcode = await self._mp_call(_reap, self._proc)

    def _close_sockets(self) -> None:
        for s in (self._ctrl, self._out, self._err, *self._child):
            s.close()

    def _signal(self, sig: signal.Signals) -> None:
        # Only while the sentinel has not reported the exit: after that, the pid may belong
        # to another process.
        if self._proc is not None and not (self._exited is not None and self._exited.done()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._proc.pid, sig)

    # -- the control channel -----------------------------------------------------------------
    async def _serve(self) -> None:
        reader, self._writer = await asyncio.open_unix_connection(sock=self._ctrl)
        try:
            while (msg := await read_frame(reader)) is not None:
                self._dispatch(msg)
        except ProtocolError as exc:
            self._broken = str(exc)
        except OSError:  # the worker died with data in flight: an end like any other
            return
        except Exception as exc:  # a bug here: end the worker
            log.exception("worker_channel_failed")
            self._broken = f"{type(exc).__name__}: {exc}"
        if self._broken is not None:
            log.warning("worker_protocol_error", error=self._broken)
            self._signal(signal.SIGKILL)

    def _dispatch(self, msg: dict[str, Any]) -> None:
        kind = msg["t"]
        if kind == "log":
            self._relog(msg)
        elif kind == "progress":
            self._progress(msg)
        elif kind == "transfer":
            self._transfer(msg)
        elif kind == "call":
            self._call(msg)
        elif kind == "done":
            self._done(msg)
        else:
            raise ProtocolError(f"unknown message type {kind!r}")

    def _relog(self, msg: dict[str, Any]) -> None:
        level = msg.get("level")
        method = getattr(self._jlog, level if isinstance(level, str) and level in _LEVELS
                         else "info")
        fields = msg.get("fields")
        fields = {k: v for k, v in fields.items() if k not in _RESERVED} \
            if isinstance(fields, dict) else {}
        method(str(msg.get("event", ""))[:1024], **fields)

    def _progress(self, msg: dict[str, Any]) -> None:
        sink = progress.current()
        delta = {}
        for key, seen in self._seen.items():
            value = _count(msg.get(key), key)
            delta[key], self._seen[key] = max(value - seen, 0), max(value, seen)
        if sink is not None:
            sink.add_total(files=delta["files_total"], nbytes=delta["bytes_total"])
            sink.advance(files=delta["files_done"], nbytes=delta["bytes_done"])

    def _transfer(self, msg: dict[str, Any]) -> None:
        src, dst, ok = msg.get("src"), msg.get("dst"), msg.get("ok")
        names = set(getattr(self._services.vfs, "names", ()))
        # Metric labels come from the config, never from what a worker makes up.
        if src not in names or dst not in names or not isinstance(ok, bool):
            raise ProtocolError("transfer message names an unknown VFS")
        progress.transfer_finished(str(src), str(dst), _count(msg.get("files"), "files"),
                                   _count(msg.get("bytes"), "bytes"), ok)

    def _done(self, msg: dict[str, Any]) -> None:
        check_outcome(msg)
        self._outcome = msg

    # -- calls -----------------------------------------------------------------------------
    def _call(self, msg: dict[str, Any]) -> None:
        call_id, op, args = msg.get("id"), msg.get("op"), msg.get("args")
        if not isinstance(call_id, int) or not isinstance(args, dict):
            raise ProtocolError("call without an integer id and an args object")
        if len(self._calls) >= _MAX_PENDING_CALLS:
            raise ProtocolError(f"more than {_MAX_PENDING_CALLS} calls pending")
        task = asyncio.create_task(self._answer(call_id, str(op), args))
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    async def _answer(self, call_id: int, op: str, args: dict[str, Any]) -> None:
        try:
            reply = {"t": "reply", "id": call_id,
                     "value": await self._requests.answer(op, args)}
        except Exception as exc:
            reply = {"t": "reply", "id": call_id, "error": error_to_wire(exc)}
        if self._writer is None or self._writer.is_closing():
            return
        self._writer.write(encode(reply))
        if self._writer.transport.get_write_buffer_size() > _MAX_UNREAD_REPLIES:
            self._broken = "the worker does not read the daemon's replies"
            self._signal(signal.SIGKILL)

    # -- output ------------------------------------------------------------------------------
    async def _pump(self, sock: socket.socket, stream: str) -> None:
        """The worker's stdout or stderr into the job's log, line by line, as an inline
        script's print would go (see :mod:`aftd.stdio`)."""
        loop = asyncio.get_running_loop()
        sock.setblocking(False)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        while chunk := await loop.sock_recv(sock, 65536):
            feed_job_output(self._job.id, stream, decoder.decode(chunk))
        feed_job_output(self._job.id, stream, decoder.decode(b"", final=True))


def _count(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProtocolError(f"{name} must be a non-negative integer")
    return value


def _reap(proc: Any) -> int | None:
    proc.join(timeout=0)
    code: int | None = proc.exitcode
    if code is not None:
        proc.close()
    return code


async def wait_readable(fd: int) -> None:
    """Until ``fd`` is readable (a process sentinel: the process has ended)."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def on_ready() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, on_ready)
    try:
        await ready
    finally:
        with contextlib.suppress(Exception):
            loop.remove_reader(fd)
