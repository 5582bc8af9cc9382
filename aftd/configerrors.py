"""pydantic's validation errors, told the way aftd has always told config errors.

``FILE: dotted.key: reason``: the key as a user writes it (``vfs.lake.bucket``,
``auth.api_keys[0].sha256``, ``triggers[2].cron``), never pydantic's internal location (which
names the union member it tried), and a reason in our words (``must be >= 1, got 0``,
``unknown key``, ``must be one of inline, process; got 'thread'``). The location is read by
walking the model's type along the error's path, so the reason can say what was expected.
"""

from __future__ import annotations

import ipaddress
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ValidationError

from aftd.errors import ConfigError

__all__ = ["config_error", "describe", "got", "locate", "unwrap"]


@runtime_checkable
class _Tagged(Protocol):
    """A :class:`~aftd.configmodel.TypeRegistry` (the next location step is a ``type`` tag)."""

    @property
    def names(self) -> tuple[str, ...]: ...

    def model(self, name: str) -> type[BaseModel]: ...


_SIMPLE = {
    "missing": "is required",
    "extra_forbidden": "unknown key",
    "string_too_short": "must not be empty",
    "too_short": "must not be empty",
}
_BOUNDS = {
    "greater_than_equal": (">=", "ge"),
    "less_than_equal": ("<=", "le"),
    "greater_than": (">", "gt"),
    "less_than": ("<", "lt"),
}
_SCALARS: dict[Any, tuple[str, str]] = {
    str: ("a string", "strings"),
    Path: ("a string", "strings"),
    bool: ("true or false", "booleans"),
    int: ("an integer", "integers"),
    float: ("a number", "numbers"),
    ipaddress.IPv4Network | ipaddress.IPv6Network: ("a CIDR network", "CIDR networks"),
}


def got(value: Any) -> str:
    """What a wrong value is, in a user's words."""
    return "a boolean" if isinstance(value, bool) else type(value).__name__


def config_error(exc: ValidationError, tp: Any, file: str, prefix: str) -> ConfigError:
    """The first error (in the order the keys are declared), as a :class:`ConfigError`."""
    err = exc.errors(include_url=False)[0]
    key, leaf = locate(tp, err["loc"])
    below, reason = _reason(err, leaf)
    dotted = _join(_join(prefix, key), below)
    return ConfigError(file, dotted or "(top level)", reason)


def _join(a: str, b: str) -> str:
    if not a or not b:
        return a or b
    return a + b if b.startswith("[") else f"{a}.{b}"


def locate(tp: Any, loc: tuple[int | str, ...]) -> tuple[str, Any]:
    """The dotted key of ``loc`` inside ``tp``, and the type expected there."""
    key = ""
    for seg in loc:
        bare, registry = unwrap(tp)
        if registry is not None:  # pydantic names the union member it validated against
            tp = registry.model(str(seg)) if seg in registry.names else Any
            continue
        if isinstance(bare, type) and issubclass(bare, BaseModel):
            field = bare.model_fields.get(str(seg))
            tp = Any if field is None else (
                Annotated[(field.annotation, *field.metadata)] if field.metadata
                else field.annotation)
            key = _join(key, str(seg))
        elif typing.get_origin(bare) in (tuple, list):
            tp = typing.get_args(bare)[0]
            key = _join(key, f"[{seg}]")
        else:
            tp = typing.get_args(bare)[1] if typing.get_origin(bare) is dict else Any
            key = _join(key, str(seg))
    return key, tp


def unwrap(tp: Any) -> tuple[Any, _Tagged | None]:
    """``tp`` without ``Annotated`` and ``| None``, and the registry it is annotated with."""
    registry = None
    while True:
        if typing.get_origin(tp) is Annotated:
            registry = next((m for m in tp.__metadata__ if isinstance(m, _Tagged)), registry)
            tp = tp.__origin__
        elif typing.get_origin(tp) in (typing.Union, types.UnionType):
            members = [m for m in typing.get_args(tp) if m is not type(None)]
            if len(members) != 1:
                return tp, registry
            tp = members[0]
        else:
            return tp, registry


def _reason(err: Any, leaf: Any) -> tuple[str, str]:
    """(a key below the error's location, the reason) for one pydantic error."""
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    if kind in _SIMPLE:
        return "", _SIMPLE[kind]
    if kind in ("value_error", "assertion_error"):
        problem = ctx.get("error")
        return getattr(problem, "key", ""), str(problem)
    if kind in _BOUNDS:
        op, name = _BOUNDS[kind]
        return "", f"must be {op} {ctx[name]}, got {value}"
    if kind == "literal_error":
        return "", _choice(typing.get_args(unwrap(leaf)[0]), value)
    if kind.startswith("union_tag_"):
        return "type", _tag(leaf, value)
    if kind.endswith("_type") or kind == "is_instance_of":
        return "", f"must be {describe(leaf)}, got {got(value)}"
    return "", str(err["msg"])


def _choice(choices: tuple[Any, ...], value: Any) -> str:
    if not isinstance(value, str):
        return f"must be a string, got {got(value)}"
    return f"must be one of {', '.join(map(str, choices))}; got {value!r}"


def _tag(leaf: Any, table: Any) -> str:
    registry = unwrap(leaf)[1]
    names = ", ".join(registry.names) if registry is not None else "?"
    if not isinstance(table, dict) or "type" not in table:
        return f"is required (one of {names})"
    return _choice(tuple(names.split(", ")), table["type"])


def describe(tp: Any) -> str:
    """What a value of ``tp`` looks like in TOML (``a list of strings``)."""
    bare, registry = unwrap(tp)
    if registry is not None or typing.get_origin(bare) is dict or (
            isinstance(bare, type) and issubclass(bare, BaseModel | dict)):
        return "a table"
    if typing.get_origin(bare) in (tuple, list):
        item = typing.get_args(bare)[0]
        if describe(item) == "a table":
            return "an array of tables ([[...]])"
        bare_item = unwrap(item)[0]
        if typing.get_origin(bare_item) is Literal:
            return "a list of strings"
        return f"a list of {_SCALARS.get(bare_item, ('', 'values'))[1]}"
    if typing.get_origin(bare) is Literal:
        return "a string"
    return _SCALARS.get(bare, ("a valid value", ""))[0]
