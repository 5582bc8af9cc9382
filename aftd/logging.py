"""structlog configuration: JSON lines on stdout, ids bound through contextvars, redaction.

The processor chain is: merge contextvars (job_id, script_id, request_id) -> level/timestamp ->
add service identity -> render exceptions -> **redact secret values** -> tee into the job's own
log (when the line belongs to a job) -> render JSON/console.
"""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Callable, MutableMapping
from typing import Any, Protocol, TextIO

import structlog

from aftd import __version__
from aftd.redact import scrub, scrub_obj

__all__ = ["JOB_SINKS", "JobLogSink", "configure_logging", "get_logger"]

EventDict = MutableMapping[str, Any]


class JobLogSink(Protocol):
    def write(self, entry: dict[str, Any]) -> None:
        """Receive one finished (redacted) log entry belonging to a job."""


# job_id -> sink; the runner registers a sink for the lifetime of each job.
JOB_SINKS: dict[str, JobLogSink] = {}

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
    # Every value, including rendered tracebacks, passes through the secret scrubber.
    return {k: scrub_obj(v) if not isinstance(v, str) else scrub(v) for k, v in event.items()}


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
    out = stream or sys.stdout
    renderer: Any = (structlog.processors.JSONRenderer() if fmt == "json"
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
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    # Third-party libraries log through stdlib logging: route warnings and up into the same pipe.
    _route_stdlib(level)


def _route_stdlib(level: str) -> None:
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
            method(record.getMessage(), logger=record.name)
        except Exception:
            self.handleError(record)


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)
