"""A job's progress in the terminal: one line redrawn in place on a TTY, plain lines otherwise.

Hand-written rather than a library: ``aft`` is a stdlib-only client, the figures (bytes done
and total, files, rate) come from the daemon's job record, and what is drawn is one line
rewritten with ``\\r`` and "erase to end of line". ``rich`` would draw the same line but brings
~13 MB of dependencies (pygments, markdown-it-py) into the daemon's install for it.

The view writes to one stream (stderr); lines that belong on another (the job's log on stdout)
go through :meth:`ProgressView.line`, which lifts the bar, writes the line and puts the bar
back, so the two never mix on a terminal.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from aftd.units import human_bytes

__all__ = ["ProgressView", "eta_text", "human_bytes", "is_tty", "progress_text"]

_ERASE = "\r\x1b[K"
_BAR_CELLS = 20
# Plain (non-TTY) output: a line when the figures change, at most this often.
PLAIN_INTERVAL_S = 2.0


def eta_text(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = round(seconds)
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def is_tty(stream: TextIO) -> bool:
    """A terminal that understands ``\\r`` and erase-line (not ``TERM=dumb``)."""
    try:
        return stream.isatty() and os.environ.get("TERM", "") != "dumb"
    except (AttributeError, ValueError):
        return False


def progress_text(job: Mapping[str, Any]) -> str:
    """The figures of a job: percent, bytes (of total), rate, ETA, files; without a bar."""
    p = job.get("progress") or {}
    done, total = int(p.get("bytesDone", 0)), int(p.get("bytesTotal", 0))
    rate = float(p.get("bytesPerSecond", 0.0))
    parts = []
    if total > 0:
        parts.append(f"{min(100.0, 100.0 * done / total):3.0f}%")
        parts.append(f"{human_bytes(done)} / {human_bytes(total)}")
    else:
        parts.append(human_bytes(done))
    parts.append(f"{human_bytes(rate)}/s")
    if total > 0 and job.get("status") == "running":
        parts.append("ETA " + (eta_text((total - done) / rate) if rate > 0 else "?"))
    files_total = int(p.get("filesTotal", 0))
    if files_total or p.get("filesDone"):
        parts.append(f"{p.get('filesDone', 0)}/{files_total} files")
    return "  ".join(parts)


def _bar(job: Mapping[str, Any]) -> str:
    p = job.get("progress") or {}
    total = int(p.get("bytesTotal", 0))
    if total <= 0:
        return ""
    filled = min(_BAR_CELLS, int(_BAR_CELLS * int(p.get("bytesDone", 0)) / total))
    return "[" + "#" * filled + "-" * (_BAR_CELLS - filled) + "] "


class ProgressView:
    """Shows one job's progress on ``out``; see the module docstring."""

    def __init__(self, out: TextIO, *, tty: bool | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 plain_interval_s: float = PLAIN_INTERVAL_S) -> None:
        self.out = out
        self.tty = is_tty(out) if tty is None else tty
        self._clock = clock
        self._interval = plain_interval_s
        self._drawn = ""  # the bar as it is on screen (TTY)
        self._last_text = ""  # the figures last printed (plain)
        self._last_at = -math.inf

    def update(self, job: Mapping[str, Any]) -> None:
        status = str(job.get("status", "?"))
        if self.tty:
            # The state only while it is not "running"; the bar goes first when space is short.
            prefix = "" if status == "running" else f"{status} "
            line = f"{prefix}{_bar(job)}{progress_text(job)}"
            if len(line) > _width():
                line = prefix + progress_text(job)
            self._draw(line)
            return
        text = f"{status} {progress_text(job)}"
        now = self._clock()
        if text != self._last_text and now - self._last_at >= self._interval:
            print(f"progress: {text}", file=self.out, flush=True)
            self._last_text, self._last_at = text, now

    def line(self, text: str, stream: TextIO) -> None:
        """Print ``text`` on ``stream`` (the job's log) without tearing the bar."""
        drawn = self._drawn
        self._lift()
        print(text, file=stream, flush=True)
        if drawn:
            self._draw(drawn)

    def close(self, job: Mapping[str, Any]) -> None:
        """Replace the bar with the job's outcome, one plain line."""
        self._lift()
        duration = _duration_s(job)
        summary = f"job {job.get('jobId')} {job.get('status')}"
        p = job.get("progress") or {}
        if p.get("bytesDone") or p.get("filesDone"):
            summary += f": {human_bytes(int(p.get('bytesDone', 0)))}"
            if p.get("filesDone"):
                summary += f" in {p.get('filesDone')} files"
            if duration:
                summary += f", {duration:.1f} s ({human_bytes(p.get('bytesDone', 0) / duration)}/s)"
        elif duration is not None:
            summary += f" after {duration:.1f} s"
        if job.get("error"):
            summary += f": {job['error']}"
        print(summary, file=self.out, flush=True)

    def stop(self) -> None:
        """Take the bar off the screen (an error or Ctrl-C ends the command)."""
        self._lift()

    def _draw(self, text: str) -> None:
        text = text[:_width()]
        self.out.write(_ERASE + text)
        self.out.flush()
        self._drawn = text

    def _lift(self) -> None:
        if self.tty and self._drawn:
            self.out.write(_ERASE)
            self.out.flush()
        self._drawn = ""


def _width() -> int:
    """Columns the line may use (one less than the terminal's: no wrap at the last one)."""
    return max(20, shutil.get_terminal_size(fallback=(80, 24)).columns - 1)


def _duration_s(job: Mapping[str, Any]) -> float | None:
    from datetime import datetime

    start, end = job.get("startedAt"), job.get("finishedAt")
    if not start or not end:
        return None
    parse = datetime.fromisoformat
    return (parse(end.replace("Z", "+00:00")) - parse(start.replace("Z", "+00:00"))).total_seconds()
