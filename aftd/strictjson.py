"""Strict JSON (RFC 8259) in and out.

Python's :mod:`json` accepts and emits ``NaN``, ``Infinity`` and ``-Infinity`` by default, and
turns ``1e999999`` into an infinite float. None of these are JSON: a strict client (JavaScript's
``JSON.parse``, Go's ``encoding/json``) rejects a whole document that contains one. :func:`loads`
marks such numbers so :func:`first_problem` can name where they are; :func:`dumps` never writes
them, replacing any that reached stored data with ``null`` rather than failing the response.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["NonFinite", "Problem", "dumps", "finite", "first_problem", "loads"]


@dataclass(frozen=True)
class NonFinite:
    """A number token that has no finite value (``NaN``, ``Infinity``, ``1e999999``)."""

    token: str


@dataclass(frozen=True)
class Problem:
    path: str
    reason: str


def _parse_float(text: str) -> float | NonFinite:
    value = float(text)
    return value if math.isfinite(value) else NonFinite(text)


def loads(raw: bytes | str) -> Any:
    """Parse JSON, marking non-finite numbers as :class:`NonFinite` instead of floats.

    Raises ``ValueError`` (also ``UnicodeDecodeError``) for malformed input and
    ``RecursionError`` for input nested deeper than the interpreter's recursion limit.
    """
    return json.loads(raw, parse_constant=NonFinite, parse_float=_parse_float)


def first_problem(value: Any, max_depth: int) -> Problem | None:
    """The first thing in a :func:`loads` result that is not plain, finite, valid JSON."""
    stack: list[tuple[Any, str, int]] = [(value, "", 1)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, dict | list) and depth > max_depth:
            return Problem(path or "(body)", f"nested deeper than {max_depth} levels")
        if isinstance(item, dict):
            if not all(_valid_text(k) for k in item):
                return Problem(path or "(body)", "an object key contains an unpaired surrogate")
            stack.extend((v, _key_path(path, k), depth + 1) for k, v in reversed(item.items()))
        elif isinstance(item, list):
            stack.extend((v, f"{path}[{i}]", depth + 1) for i, v in reversed(list(enumerate(item))))
        elif isinstance(item, NonFinite):
            return Problem(path or "(body)", f"{item.token} is not a finite number; JSON has no "
                                             "NaN or Infinity")
        elif isinstance(item, str) and not _valid_text(item):
            return Problem(path or "(body)", "the string contains an unpaired surrogate (\\ud800-"
                                             "\\udfff escape); it is not valid Unicode")
    return None


def _key_path(parent: str, key: str) -> str:
    simple = key.replace("_", "").replace("-", "").isalnum() and key.isascii()
    if simple:
        return f"{parent}.{key}" if parent else key
    return f"{parent}[{json.dumps(key)}]"


def _valid_text(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def finite(value: Any) -> Any:
    """A copy of ``value`` with every non-finite float (and :class:`NonFinite`) as ``None``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, NonFinite):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


_COMPACT = (",", ":")


def dumps(obj: Any, *, default: Callable[[Any], Any] | None = None,
          sort_keys: bool = False, separators: tuple[str, str] | None = _COMPACT,
          **_ignored: Any) -> str:
    """``json.dumps`` that only ever writes valid JSON: non-finite numbers become ``null``.

    Extra keyword arguments are accepted and ignored so structlog's ``JSONRenderer`` can use
    this as its serializer.
    """
    try:
        return json.dumps(obj, allow_nan=False, default=default, sort_keys=sort_keys,
                          separators=separators)
    except ValueError as exc:
        if "Out of range float" not in str(exc):
            raise
    return json.dumps(finite(obj), allow_nan=False, default=default, sort_keys=sort_keys,
                      separators=separators)
