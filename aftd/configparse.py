"""Typed, key-checked reading of TOML tables.

Every config section (core, VFS entries, secret providers) reads its keys through a
:class:`Section`, so unknown keys and wrong types produce the same clear error everywhere:
``FILE: dotted.key: reason``.
"""

from __future__ import annotations

import builtins
import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from aftd.errors import ConfigError

__all__ = ["Section"]

T = TypeVar("T")
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Section:
    """A TOML table being read: every getter records the key; :meth:`finish` rejects the rest."""

    def __init__(
        self, data: Mapping[builtins.str, Any], file: builtins.str, prefix: builtins.str
    ) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(file, prefix or "(top level)", "must be a table")
        self.data = data
        self.file = file
        self.prefix = prefix
        self._seen: set[builtins.str] = set()

    def key(self, name: builtins.str) -> builtins.str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def error(self, name: builtins.str, reason: builtins.str) -> ConfigError:
        return ConfigError(self.file, self.key(name), reason)

    def has(self, name: builtins.str) -> builtins.bool:
        return name in self.data

    def _get(
        self, name: builtins.str, types: type | tuple[type, ...], default: Any, what: builtins.str
    ) -> Any:
        self._seen.add(name)
        if name not in self.data:
            return default
        value = self.data[name]
        # bool is an int subclass; a boolean where a number is wanted is a mistake.
        if isinstance(value, bool) and bool not in _as_tuple(types):
            raise self.error(name, f"must be {what}, got a boolean")
        if not isinstance(value, types):
            raise self.error(name, f"must be {what}, got {type(value).__name__}")
        return value

    def str(
        self,
        name: builtins.str,
        default: builtins.str = "",
        *,
        choices: tuple[builtins.str, ...] = (),
    ) -> builtins.str:
        value: builtins.str = self._get(name, str, default, "a string")
        if choices and value not in choices:
            raise self.error(name, f"must be one of {', '.join(choices)}; got {value!r}")
        return value

    def required_str(self, name: builtins.str) -> builtins.str:
        if name not in self.data:
            self._seen.add(name)
            raise self.error(name, "is required")
        value = self.str(name)
        if not value:
            raise self.error(name, "must not be empty")
        return value

    def bool(self, name: builtins.str, default: builtins.bool) -> builtins.bool:
        value: builtins.bool = self._get(name, bool, default, "true or false")
        return value

    def int(
        self,
        name: builtins.str,
        default: builtins.int,
        *,
        minimum: builtins.int | None = None,
        maximum: builtins.int | None = None,
    ) -> builtins.int:
        value: builtins.int = self._get(name, int, default, "an integer")
        _check_range(self, name, value, minimum, maximum)
        return value

    def float(
        self,
        name: builtins.str,
        default: builtins.float,
        *,
        minimum: builtins.float | None = None,
        maximum: builtins.float | None = None,
    ) -> builtins.float:
        value = self._get(name, (int, float), default, "a number")
        _check_range(self, name, value, minimum, maximum)
        return float(value)

    def path(
        self, name: builtins.str, default: Path | None = None, *, base: Path | None = None
    ) -> Path | None:
        raw = self.str(name, "")
        if not raw:
            return default
        p = Path(raw).expanduser()
        if not p.is_absolute() and base is not None:
            p = base / p
        return p

    def str_list(
        self, name: builtins.str, default: tuple[builtins.str, ...] = ()
    ) -> tuple[builtins.str, ...]:
        value = self._get(name, list, None, "a list of strings")
        if value is None:
            return default
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.error(f"{name}[{i}]", f"must be a string, got {type(item).__name__}")
        return tuple(value)

    def networks(
        self, name: builtins.str, default: tuple[builtins.str, ...]
    ) -> tuple[IPNetwork, ...]:
        out: builtins.list[IPNetwork] = []
        for i, item in enumerate(self.str_list(name, default)):
            try:
                out.append(ipaddress.ip_network(item, strict=False))
            except ValueError as exc:
                raise self.error(f"{name}[{i}]", f"is not a CIDR network: {exc}") from None
        return tuple(out)

    def table(self, name: builtins.str) -> Section:
        self._seen.add(name)
        value = self.data.get(name, {})
        if not isinstance(value, Mapping):
            raise self.error(name, "must be a table")
        return Section(value, self.file, self.key(name))

    def tables(self, name: builtins.str) -> builtins.list[Section]:
        """An array of tables (``[[name]]``)."""
        self._seen.add(name)
        value = self.data.get(name, [])
        if not isinstance(value, list):
            raise self.error(name, "must be an array of tables ([[...]])")
        return [Section(v, self.file, f"{self.key(name)}[{i}]") for i, v in enumerate(value)]

    def mark(self, *names: builtins.str) -> None:
        """Declare keys as handled by someone else (e.g. a sub-parser)."""
        self._seen.update(names)

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self._seen)
        if unknown:
            raise self.error(unknown[0], "unknown key")


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _check_range(sec: Section, name: str, value: float, lo: float | None, hi: float | None) -> None:
    if lo is not None and value < lo:
        raise sec.error(name, f"must be >= {lo}, got {value}")
    if hi is not None and value > hi:
        raise sec.error(name, f"must be <= {hi}, got {value}")
