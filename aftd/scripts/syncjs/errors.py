"""What a JavaScript error says, and where: the message and the script's line and column.

QuickJS reports an uncaught error as its text followed by the stack, one ``at`` line per frame,
each naming the source as ``<input>`` (its ``eval`` takes no file name)::

    TypeError: cannot read property 'x' of undefined
        at copy (<input>:12:9)
        at <eval> (<input>:30:1)

A syntax error has one frame without a function (``at <input>:2:9``). The host API re-stacks its
errors at the script's call, so the first frame is always a line of the script. The frame format
is the engine's, not an API: ``tests/scripts/test_syncjs_unit.py`` pins it, and an error whose
position cannot be read still fails its job with the message and "line unknown".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["JsError", "first_frame", "parse_js_error"]

_FRAME = re.compile(r"^\s+at (?:(?P<fn>.*?) \()?<input>:(?P<line>\d+):(?P<col>\d+)\)?\s*$")
_SOURCE = "<input>"


@dataclass(frozen=True)
class JsError:
    message: str  # "TypeError: ..." (an Error's name and message, or a thrown value's text)
    line: int | None
    column: int | None
    stack: str  # the frames, naming the script file instead of <input>
    syntax: bool  # a syntax error: the script never started

    def where(self, script: str) -> str:
        """``at line 3, column 9 of claim.js`` (or ``line unknown``)."""
        if self.line is None:
            return f"line unknown in {script}"
        return f"at line {self.line}, column {self.column} of {script}"

    def describe(self, script: str) -> str:
        return f"{self.message} ({self.where(script)})"


def first_frame(stack: str) -> tuple[int, int] | None:
    """(line, column) of the first frame in ``stack`` that runs the script's code.

    A frame without a function names a source being compiled: the script itself when a
    syntax error stopped it from starting (then it is the only frame), else a text the script
    handed to ``JSON.parse`` or ``eval``, whose position is not a line of the script.
    """
    frames = [m for raw in stack.splitlines() if (m := _FRAME.match(raw))]
    called = [m for m in frames if m["fn"] is not None]
    match = called[0] if called else (frames[0] if frames else None)
    return (int(match["line"]), int(match["col"])) if match else None


def parse_js_error(text: str, script: str) -> JsError:
    """Split an uncaught error's text into message and stack; see the module docstring."""
    lines = text.rstrip("\n").split("\n")
    frames_at = next((i for i, ln in enumerate(lines) if _FRAME.match(ln)), len(lines))
    message = "\n".join(lines[:frames_at]).strip()
    frames = lines[frames_at:]
    if frames == [] and len(lines) > 1 and lines[-1] == "undefined":
        # A thrown value that is not an Error: QuickJS appends its (missing) stack.
        message = "\n".join(lines[:-1]).strip()
    position = first_frame("\n".join(frames))
    return JsError(message=message or "uncaught exception",
                   line=position[0] if position else None,
                   column=position[1] if position else None,
                   stack="\n".join(frames).replace(_SOURCE, script),
                   syntax=message.startswith("SyntaxError") and _compile_frame(frames))


def _compile_frame(frames: list[str]) -> bool:
    """Whether the stack is the single function-less frame of a failed compile (a SyntaxError
    thrown while the script ran, by JSON.parse say, has the script's frames)."""
    match = _FRAME.match(frames[0]) if len(frames) == 1 else None
    return match is not None and match["fn"] is None
