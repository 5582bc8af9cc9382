"""Checking the arguments of a host call: they come from the script, so they are untrusted."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from aftd.errors import AftdError

__all__ = ["HostCallError", "number", "obj", "opt_str", "text"]

MAX_TEXT = 1 << 20


class HostCallError(AftdError):
    """A host call was made with bad arguments; the message names the function and argument."""


def text(args: Mapping[str, Any], key: str, what: str) -> str:
    value = args.get(key)
    if not isinstance(value, str):
        raise HostCallError(f"{what} must be a string")
    if len(value) > MAX_TEXT:
        raise HostCallError(f"{what} is longer than {MAX_TEXT} characters")
    return value


def opt_str(args: Mapping[str, Any], key: str, what: str) -> str | None:
    return None if args.get(key) is None else text(args, key, what)


def obj(args: Mapping[str, Any], key: str, what: str) -> dict[str, Any]:
    value = args.get(key)
    if not isinstance(value, dict):
        raise HostCallError(f"{what} must be an object")
    return value


def number(args: Mapping[str, Any], key: str, what: str, *, low: float = 0.0,
           high: float = math.inf) -> float:
    value = args.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or not low <= value <= high:
        raise HostCallError(f"{what} must be a number from {low:g} to {high:g}, got "
                            f"{_shown(value)}")
    return float(value)


def _shown(value: Any) -> str:
    return "undefined" if value is None else repr(value)[:40]
