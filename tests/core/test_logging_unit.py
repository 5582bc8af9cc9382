"""The logging pipeline and stdio routing in-process: scrubbing of any value, stdlib records,
print/stderr/warnings routed to the current job's log."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from aftd import redact
from aftd.logging import JOB_SINKS, configure_logging, get_logger
from aftd.stdio import MAX_LINE_CHARS, feed_job_output, flush_job_output, routed_stdio

SECRET = 'p\\a"s\'s-wörd-0123456789'


class Sink:
    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def write(self, entry: dict[str, Any]) -> None:
        self.entries.append(entry)

    def events(self) -> list[str]:
        return [str(e["event"]) for e in self.entries]


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    """The pipeline writing to a buffer, one secret registered, a job sink for job "j1"."""
    buf = io.StringIO()
    redact.REDACTOR.clear()
    redact.register(SECRET)
    configure_logging("info", "json", stream=buf)
    try:
        yield buf
    finally:
        structlog.reset_defaults()
        structlog.contextvars.clear_contextvars()
        root = logging.getLogger()
        for h in list(root.handlers):
            if type(h).__name__ == "_StructlogHandler":
                root.removeHandler(h)
        JOB_SINKS.clear()
        redact.REDACTOR.clear()


def lines(buf: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def assert_clean(text: str) -> None:
    for form in (SECRET, repr(SECRET)[1:-1], json.dumps(SECRET)[1:-1],
                 repr(SECRET.encode())[2:-1]):
        assert form not in text


def test_stdlib_records_with_tracebacks_are_scrubbed(out: io.StringIO) -> None:
    try:
        raise KeyError(SECRET)
    except KeyError:
        logging.getLogger("some.lib").error("failed for %r", {"k": SECRET}, exc_info=True)
    (line,) = lines(out)
    assert line["logger"] == "some.lib"
    assert "KeyError" in line["exception"]
    assert_clean(out.getvalue())


def test_non_string_values_are_scrubbed(out: io.StringIO) -> None:
    log = get_logger("t")
    log.error("x", error=RuntimeError(SECRET), raw=SECRET.encode(), pair=("a", SECRET),
              nested={"a": [{"b": SECRET}]})
    log.info("formatted %r", {"s": SECRET})
    assert len(lines(out)) == 2
    assert_clean(out.getvalue())


def test_print_in_a_job_context_goes_to_that_job(out: io.StringIO) -> None:
    sink = Sink()
    JOB_SINKS["j1"] = sink
    real_stdout = io.StringIO()
    saved = sys.stdout
    sys.stdout = real_stdout
    try:
        with routed_stdio():
            print("outside a job")

            async def job() -> None:
                structlog.contextvars.bind_contextvars(job_id="j1", script_id="s")
                print("hello", SECRET)
                sys.stderr.write("to stderr\n")
                await asyncio.to_thread(print, "from a worker thread")
                print("no newline yet", end="", flush=True)  # kept until the job's end
                assert sink.events()[-1] == "from a worker thread"
                flush_job_output("j1")

            asyncio.run(job())
    finally:
        sys.stdout = saved
    assert real_stdout.getvalue() == "outside a job\n"
    assert sink.events() == ["hello ***", "to stderr", "from a worker thread", "no newline yet"]
    assert [e["stream"] for e in sink.entries] == ["stdout", "stderr", "stdout", "stdout"]
    assert_clean(out.getvalue())


def test_warnings_in_a_job_context_go_to_that_job(out: io.StringIO) -> None:
    sink = Sink()
    JOB_SINKS["j1"] = sink
    with routed_stdio(), warnings.catch_warnings():
        warnings.simplefilter("always")
        structlog.contextvars.bind_contextvars(job_id="j1")
        warnings.warn(f"careful with {SECRET}", UserWarning, stacklevel=1)
        structlog.contextvars.clear_contextvars()
    (entry,) = sink.entries
    assert entry["stream"] == "warnings"
    assert entry["event"] == "UserWarning: careful with ***"
    assert entry["level"] == "warning"


def test_daemon_output_outside_jobs_is_scrubbed_line_by_line(out: io.StringIO) -> None:
    real = io.StringIO()
    saved = sys.stderr
    sys.stderr = real
    try:
        with routed_stdio():
            # A secret split over two writes is still seen whole.
            sys.stderr.write("token=" + SECRET[:5])
            sys.stderr.write(SECRET[5:] + "\n")
    finally:
        sys.stderr = saved
    assert real.getvalue() == "token=***\n"


def test_long_lines_are_cut_into_bounded_pieces_after_scrubbing(out: io.StringIO) -> None:
    sink = Sink()
    JOB_SINKS["j2"] = sink
    feed_job_output("j2", "stdout", "a" * (MAX_LINE_CHARS * 2 + 10))  # no newline: forced out
    assert sink.events() == ["a" * MAX_LINE_CHARS] * 2 + ["a" * 10]
    # A secret across the cut is masked whole, not cut into parts that no longer match.
    feed_job_output("j2", "stdout", "b" * (MAX_LINE_CHARS - 5) + SECRET + "c\n")
    assert sink.events()[3:] == ["b" * (MAX_LINE_CHARS - 5) + "***c"]
    feed_job_output("j2", "stdout", "tail")
    flush_job_output("j2")
    assert sink.events()[-1] == "tail"
    assert_clean(out.getvalue())
