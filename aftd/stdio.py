"""Route what scripts write to stdout, stderr and ``warnings`` into their job's log, scrubbed.

While the daemon runs, ``sys.stdout`` and ``sys.stderr`` are proxies. A write made while a job
is current (the ``job_id`` the runner binds in structlog's contextvars; a thread started with
``asyncio.to_thread`` inherits it) is buffered per job and stream up to each newline and then
logged as one line of that job's log: through the logging pipeline, so it is scrubbed of
secrets, stored with the job and also written, as a JSON log line, to the daemon's output.
Everything else goes to the real stream, also line by line and scrubbed. ``warnings.warn`` from
a job becomes a ``warning`` line of its log.

Writes straight to file descriptors 1 and 2 (C extensions, child processes) bypass Python and
cannot be routed.

:func:`feed_job_output` and :func:`flush_job_output` are the same routing for output captured
some other way (a script running in a worker process): feed chunks as they come, flush at the
end of the job.
"""

from __future__ import annotations

import contextvars
import io
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

import structlog

from aftd.redact import scrub

__all__ = ["MAX_LINE_CHARS", "StreamProxy", "feed_job_output", "flush_job_output",
           "routed_stdio"]

# A line longer than this is logged in pieces, and an unfinished line longer than this is
# logged without waiting for its newline: a script printing without newlines must not grow a
# buffer without bound. (A secret written in two writes across that forced break could be
# split; one write is always scrubbed whole.)
MAX_LINE_CHARS = 16384
# Partial lines of at most this many (job, stream) pairs are held; beyond it the oldest is
# logged as it is (only a runner that never flushes finished jobs would get there).
_MAX_BUFFERS = 4096

_log = structlog.get_logger("aftd.script")
# Set while a routed line is being logged: anything written meanwhile goes to the real stream,
# so a write from inside the logging pipeline can never loop back into it.
_EMITTING: contextvars.ContextVar[bool] = contextvars.ContextVar("aftd_stdio_emitting",
                                                                default=False)


def current_job_id() -> str | None:
    """The job whose context the caller runs in, if any."""
    job_id = structlog.contextvars.get_contextvars().get("job_id")
    return None if job_id is None else str(job_id)


class _JobBuffers:
    """Partial lines per (job id, stream), completed lines logged to the job."""

    def __init__(self) -> None:
        self._parts: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def feed(self, job_id: str, stream: str, text: str) -> None:
        key = (job_id, stream)
        with self._lock:
            pending = self._parts.pop(key, "") + text
            lines, rest = _split_lines(pending)
            if rest:
                self._parts[key] = rest
            overflow = self._overflow_locked()
        for line in lines:
            _emit_line(job_id, stream, line)
        for (other_job, other_stream), part in overflow:
            _emit_line(other_job, other_stream, part)

    def flush(self, job_id: str) -> None:
        with self._lock:
            keys = [k for k in self._parts if k[0] == job_id]
            parts = [(k[1], self._parts.pop(k)) for k in keys]
        for stream, part in parts:
            _emit_line(job_id, stream, part)

    def _overflow_locked(self) -> list[tuple[tuple[str, str], str]]:
        out = []
        while len(self._parts) > _MAX_BUFFERS:
            key = next(iter(self._parts))
            out.append((key, self._parts.pop(key)))
        return out


def _split_lines(text: str) -> tuple[list[str], str]:
    """Complete lines (without their newline) and the unfinished rest; a rest over
    :data:`MAX_LINE_CHARS` counts as a complete line."""
    *lines, rest = text.split("\n")
    lines = [line.removesuffix("\r") for line in lines]
    if len(rest) > MAX_LINE_CHARS:
        lines.append(rest)
        rest = ""
    return lines, rest


def _pieces(line: str) -> list[str]:
    """``line`` scrubbed, then cut into pieces of at most :data:`MAX_LINE_CHARS` (cutting
    first could split a secret into parts that no longer match)."""
    clean = scrub(line)
    return [clean[i:i + MAX_LINE_CHARS] for i in range(0, len(clean), MAX_LINE_CHARS)] or [""]


def _emit_line(job_id: str, stream: str, line: str) -> None:
    for piece in _pieces(line):
        _emit(job_id, stream, piece)


def _emit(job_id: str, stream: str, line: str, **fields: Any) -> None:
    token = _EMITTING.set(True)
    try:
        method = _log.info if stream == "stdout" else _log.warning
        method(line, job_id=job_id, stream=stream, **fields)
    finally:
        _EMITTING.reset(token)


_BUFFERS = _JobBuffers()


def feed_job_output(job_id: str, stream: str, text: str) -> None:
    """Log ``text`` written by job ``job_id`` on ``stream`` ("stdout"/"stderr"), line by line;
    an unfinished last line waits for its newline or :func:`flush_job_output`."""
    _BUFFERS.feed(job_id, stream, text)


def flush_job_output(job_id: str) -> None:
    """Log the unfinished lines of ``job_id``; call it when the job ends."""
    _BUFFERS.flush(job_id)


class StreamProxy(io.TextIOBase):
    """Stands in for ``sys.stdout``/``sys.stderr`` (see the module docstring)."""

    def __init__(self, real: TextIO, stream: str) -> None:
        super().__init__()
        self.wrapped_stream = real
        self.stream = stream
        self._partial = ""
        self._lock = threading.Lock()

    def write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        job_id = None if _EMITTING.get() else current_job_id()
        if job_id is not None:
            _BUFFERS.feed(job_id, self.stream, s)
        else:
            self._pass_through(s)
        return len(s)

    def _pass_through(self, s: str) -> None:
        # Line by line, so a secret split over several writes is still seen whole.
        with self._lock:
            lines, self._partial = _split_lines(self._partial + s)
            text = "".join(scrub(line) + "\n" for line in lines)
            if text:
                self.wrapped_stream.write(text)

    def flush(self) -> None:
        # A job's unfinished line waits for its newline (or the job's end); the daemon's own
        # output is written out now.
        if not _EMITTING.get() and current_job_id() is not None:
            return
        with self._lock:
            partial, self._partial = self._partial, ""
            if partial:
                self.wrapped_stream.write(scrub(partial))
        self.wrapped_stream.flush()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self.wrapped_stream.isatty()

    def fileno(self) -> int:
        return self.wrapped_stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.wrapped_stream, "encoding", None) or "utf-8"

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return getattr(self.wrapped_stream, "errors", None)

    @property
    def buffer(self) -> _BinaryProxy:
        return _BinaryProxy(self)


class _BinaryProxy(io.RawIOBase):
    """``sys.stdout.buffer``: bytes are decoded and take the text route."""

    def __init__(self, text: StreamProxy) -> None:
        super().__init__()
        self._text = text

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        self._text.write(data.decode(self._text.encoding, "replace"))
        return len(data)

    def flush(self) -> None:
        self._text.flush()


def _showwarning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: TextIO | None = None, line: str | None = None) -> None:
    job_id = None if _EMITTING.get() else current_job_id()
    if job_id is None or file is not None:
        _fallback_showwarning(message, category, filename, lineno, file, line)
        return
    _emit(job_id, "warnings", f"{category.__name__}: {message}", category=category.__name__,
          filename=filename, lineno=lineno)


_fallback_showwarning = warnings.showwarning


@contextmanager
def routed_stdio() -> Iterator[None]:
    """Install the proxies and the warnings hook for the duration of the block."""
    global _fallback_showwarning
    saved = sys.stdout, sys.stderr, warnings.showwarning
    _fallback_showwarning = saved[2]
    out, err = StreamProxy(sys.stdout, "stdout"), StreamProxy(sys.stderr, "stderr")
    sys.stdout, sys.stderr, warnings.showwarning = out, err, _showwarning
    try:
        yield
    finally:
        sys.stdout, sys.stderr, warnings.showwarning = saved
        for proxy in (out, err):
            proxy.flush()
