"""A SyncJS script's metadata, read from its leading comment without running it.

The first comment line is the description; ``@name`` and ``@timeout`` lines set the display name
and the job timeout (seconds, like a Python script's ``TIMEOUT_S``); ``@requires_tags`` lists the
host tags its jobs need in a fleet (like a Python script's ``REQUIRES_TAGS``)::

    // Claim a batch from the orchestrator, move it, report back.
    // @name claim-transfer-report
    // @timeout 600
    // @requires_tags vfs:archive zone:eu
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["JsMeta", "parse_meta"]

_TAG = re.compile(r"^@(\w+)\s*(.*?)\s*$")


@dataclass(frozen=True)
class JsMeta:
    name: str | None = None
    description: str = ""
    # The @timeout value: a number when it reads as one, else the text (the runner's check
    # names it).
    timeout_s: object = None
    requires_tags: tuple[str, ...] | None = None  # the @requires_tags words


def parse_meta(source: str) -> JsMeta:
    """The metadata in the comment lines that open ``source`` (``//`` lines or one ``/* */``)."""
    name: str | None = None
    description = ""
    timeout: object = None
    tags: tuple[str, ...] | None = None
    for line in _leading_comment(source.removeprefix("\ufeff")):
        tag = _TAG.match(line)
        if tag is None:
            description = description or line
        elif tag[1] == "name" and tag[2]:
            name = tag[2]
        elif tag[1] == "timeout":
            timeout = _number(tag[2])
        elif tag[1] == "requires_tags":
            tags = (*(tags or ()), *tag[2].replace(",", " ").split())
    return JsMeta(name=name, description=description[:200], timeout_s=timeout,
                  requires_tags=tags)


def _leading_comment(source: str) -> list[str]:
    """The text of the opening comment's lines, stripped, empty ones left out."""
    text = source.lstrip()
    if text.startswith("/*"):
        body = text[2:].split("*/", 1)[0]
        lines = [ln.strip().lstrip("*").strip() for ln in body.splitlines()]
    else:
        lines = []
        for ln in text.splitlines():
            ln = ln.strip()
            if not ln.startswith("//"):
                break
            lines.append(ln[2:].strip())
    return [ln for ln in lines if ln]


def _number(text: str) -> object:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return f"<{text}>"
