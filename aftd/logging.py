"""structlog configuration: JSON lines on stdout, ids bound through contextvars, redaction.

The processor chain is: merge contextvars (job_id, script_id, request_id) -> level/timestamp ->
add service identity -> render exceptions -> **render every value as text and scrub it** -> tee
into the job's own log (when the line belongs to a job) -> render JSON/console. Records from
stdlib ``logging`` (libraries, scripts) enter the same chain, tracebacks included.
"""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Callable, MutableMapping
from typing import Any, Protocol, TextIO

import structlog

from aftd import __version__, strictjson
from aftd.redact import scrub_value

__all__ = ["JOB_SINKS", "JobLogSink", "configure_logging", "get_logger", "level_number",
           "route_stdlib"]

EventDict = MutableMapping[str, Any]


class JobLogSink(Protocol):
    def write(self, entry: dict[str, Any]) -> None:
        """Receive one finished (redacted) log entry belonging to a job."""


# job_id -> sink; the runner registers a sink for the lifetime of each job.
JOB_SINKS: dict[str, JobLogSink] = {}

# A log value longer than this (after scrubbing) is cut: one line must not hold megabytes.
MAX_VALUE_CHARS = 65536

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


def _add_identity(host: str) -> Callable[[Any, str, EventDict], EventDict]:
    def processor(_: Any, __: str, event: EventDict) -> EventDict:
        event.setdefault("service", "aftd")
        event.setdefault("version", __version__)
        event.setdefault("host", host)
        return event

    return processor


def _redact(_: Any, __: str, event: EventDict) -> EventDict:
    # Every key and value (exceptions, bytes, URLs, containers, rendered tracebacks) becomes
    # scrubbed JSON-ready data here, so no renderer ever sees an object it could print in clear.
    rendered = scrub_value(dict(event), MAX_VALUE_CHARS)
    return rendered if isinstance(rendered, dict) else {"event": rendered}


_JOB_FIELDS_DROPPED = ("service", "version", "host")


def _tee_to_job(_: Any, __: str, event: EventDict) -> EventDict:
    job_id = event.get("job_id")
    if job_id is not None:
        sink = JOB_SINKS.get(str(job_id))
        if sink is not None:
            entry = {k: _jsonable(v) for k, v in event.items() if k not in _JOB_FIELDS_DROPPED}
            sink.write(entry)
    return event


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def configure_logging(level: str = "info", fmt: str = "json", stream: TextIO | None = None) -> None:
    """(Re)configure the process-wide pipeline; safe to call again on reload."""
    # Under aftd.stdio's routing sys.stdout is a proxy: log lines go to the stream beneath it.
    out = stream or getattr(sys.stdout, "wrapped_stream", sys.stdout)
    # Strict JSON: a NaN in a log value would make the whole line unparseable for collectors.
    renderer: Any = (structlog.processors.JSONRenderer(serializer=strictjson.dumps,
                                                       separators=(", ", ": "))
                     if fmt == "json"
                     else structlog.dev.ConsoleRenderer(colors=False))
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_identity(socket.gethostname()),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        _redact,
        _tee_to_job,
        renderer,
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        # WriteLogger writes to `out` itself (PrintLogger would print to whatever sys.stdout is).
        logger_factory=structlog.WriteLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    # Third-party libraries log through stdlib logging: route warnings and up into the same pipe.
    route_stdlib(level)


def level_number(level: str) -> int:
    """The stdlib number of a ``[logging] level`` name (info when unknown)."""
    return _LEVELS.get(level, logging.INFO)


def route_stdlib(level: str) -> None:
    """Send stdlib ``logging`` records (warnings and up) through structlog's pipeline."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if isinstance(h, _StructlogHandler):
            root.removeHandler(h)
    root.addHandler(_StructlogHandler())
    root.setLevel(max(_LEVELS.get(level, logging.INFO), logging.WARNING))


class _StructlogHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            log = structlog.get_logger(record.name)
            method = getattr(log, record.levelname.lower(), log.warning)
            extra: dict[str, Any] = {"logger": record.name}
            if record.exc_info:
                extra["exc_info"] = record.exc_info
            if record.stack_info:
                extra["stack"] = record.stack_info
            method(record.getMessage(), **extra)
        except Exception:
            self.handleError(record)


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)
