"""The building blocks of the declarative config: every section is a :class:`ConfigModel`.

A model forbids unknown keys, takes TOML's types as they are (``true`` is not a number, ``"5"``
is not an integer) and is frozen. Tables whose keys depend on their ``type`` (``[vfs.NAME]``
entries) are a discriminated union built from a :class:`TypeRegistry`: each type's model lives
in a module of its own that imports nothing heavy, and a new type is one more module and one
more line in its registry. :func:`validate` turns pydantic's errors into
:class:`~aftd.errors.ConfigError` (``FILE: dotted.key: reason``, see :mod:`aftd.configerrors`).
"""

from __future__ import annotations

import importlib
import ipaddress
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from functools import cache, lru_cache
from pathlib import Path
from typing import Annotated, Any, ClassVar, NamedTuple, Protocol, TypeVar, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    PlainSerializer,
    PlainValidator,
    Strict,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
)

from aftd.configerrors import config_error, got

__all__ = [
    "HOST_TAG_PATTERN",
    "PARAM_NAME_PATTERN",
    "ConfigModel",
    "IPNetwork",
    "InvalidKey",
    "Networks",
    "OptionalPath",
    "PositionalModel",
    "RequiredPath",
    "Section",
    "Strings",
    "TypeRegistry",
    "from_file",
    "inject_names",
    "path_or",
    "unique_names",
    "validate",
]

# A [host] tag, a script's REQUIRES_TAGS entry, a trigger's host_tags entry or a hostTags entry of
# POST /v1/jobs ("vfs:archive").
HOST_TAG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:/=@+-]{0,127}$"
# A job parameter's name, whether POST /v1/jobs or a trigger's params give it.
PARAM_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.\-]{0,127}$"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigModel(BaseModel):
    """A config table: unknown keys are errors, values keep their TOML type, frozen once built."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class PositionalModel(ConfigModel):
    """A model whose first fields may also be passed positionally (``FileConfig(path)``), as
    Python callers could when these were dataclasses."""

    POSITIONAL: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *args: Any, **data: Any) -> None:
        if len(args) > len(self.POSITIONAL):
            raise TypeError(f"{type(self).__name__} takes at most {len(self.POSITIONAL)} "
                            "positional arguments")
        super().__init__(**dict(zip(self.POSITIONAL, args, strict=False)), **data)


class InvalidKey(ValueError):
    """Raised by a model's validator to blame a key below the model (``order[1]``)."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(reason)
        self.key = key


class _Named(Protocol):
    @property
    def name(self) -> str: ...


_N = TypeVar("_N", bound=_Named)


def unique_names(entries: Iterable[_N], key: str, what: str) -> Iterator[_N]:
    """``entries`` in order; the first whose name an earlier one has raises at ``KEY[i].name``
    (lazily: checks made on each entry as it is yielded keep their order)."""
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        if entry.name in seen:
            raise InvalidKey(f"{key}[{i}].name", f"duplicate {what} name {entry.name!r}")
        seen.add(entry.name)
        yield entry


class _Load(NamedTuple):
    base: Path | None


# Set while :func:`validate` reads a config file. A context variable rather than pydantic's
# validation context, which does not reach models with positional arguments (their __init__
# validates afresh).
_LOADING: ContextVar[_Load | None] = ContextVar("aftd_config_loading", default=None)


def from_file() -> bool:
    """Whether the data being validated comes from a config file (not from Python code)."""
    return _LOADING.get() is not None


def _to_path(value: Any) -> Path | None:
    """A string path, ``~`` expanded, relative ones resolved against the config file's directory."""
    if isinstance(value, Path) or value is None:
        return value
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {got(value)}")
    if not value:
        return None
    path = Path(value).expanduser()
    load = _LOADING.get()
    if not path.is_absolute() and load is not None and load.base is not None:
        path = load.base / path
    return path


def _required_path(value: Any) -> Path:
    path = _to_path(value)
    if path is None:
        raise ValueError("is required")
    return path


def path_or(default: Callable[[], Path]) -> BeforeValidator:
    """A path whose empty value means ``default()`` (a directory chosen at run time)."""

    def convert(value: Any) -> Path:
        return _to_path(value) or default()

    return BeforeValidator(convert)


# An empty string means "not set" (TOML has no null).
OptionalPath = Annotated[Path | None, BeforeValidator(_to_path)]
RequiredPath = Annotated[Path, BeforeValidator(_required_path)]
# TOML arrays arrive as lists; the models keep tuples (immutable, like the rest of the config).
Strings = Annotated[tuple[str, ...], Strict(False)]


def _network(value: Any) -> IPNetwork:
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return value
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {got(value)}")
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError as exc:
        raise ValueError(f"is not a CIDR network: {exc}") from None


def _network_text(network: IPNetwork) -> str:
    return str(network)


Networks = Annotated[
    tuple[Annotated[IPNetwork, PlainValidator(_network),
                    PlainSerializer(_network_text, return_type=str, when_used="json"),
                    WithJsonSchema({"type": "string", "format": "cidr"})], ...],
    Strict(False),
]


class TypeRegistry:
    """The models of one kind of ``type``-discriminated table, imported on first use.

    ``types`` maps each ``type`` value to ``"module:Class"``; the module must import cheaply
    (pydantic and aftd's config modules only), because every config load builds the union. Used
    as ``Annotated[Base, REGISTRY]``: pydantic then validates against the union of the models.
    """

    def __init__(self, what: str, types: Mapping[str, str]) -> None:
        self.what = what
        self._types = dict(types)

    def __repr__(self) -> str:
        return f"TypeRegistry({self.what!r}, {sorted(self._types)})"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._types)

    def model(self, name: str) -> type[ConfigModel]:
        return _import_model(self._types[name])

    def models(self) -> tuple[type[ConfigModel], ...]:
        return tuple(self.model(name) for name in self._types)

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> Any:
        union = Union[self.models()]  # type: ignore[valid-type]  # noqa: UP007 - built at run time
        return handler.generate_schema(Annotated[union, Field(discriminator="type")])


@cache
def _import_model(ref: str) -> type[ConfigModel]:
    module, _, name = ref.partition(":")
    model = getattr(importlib.import_module(module), name)
    if not (isinstance(model, type) and issubclass(model, ConfigModel)):
        raise TypeError(f"{ref} is not a ConfigModel")
    return model


def inject_names(value: Any) -> Any:
    """Give each table of ``[kind.NAME]`` its ``name``: the key it is configured under."""
    if not isinstance(value, dict):
        return value
    out = {}
    for name, table in value.items():
        if isinstance(table, dict):
            if "name" in table:
                raise InvalidKey(f"{name}.name", "unknown key (a table's name is its key)")
            table = {**table, "name": name}
        out[name] = table
    return out


class Section(NamedTuple):
    """A raw TOML table and where it is: the file, and its dotted key (``""`` at the top)."""

    data: Any
    file: str
    prefix: str

    def validate(self, tp: Any, base: Path | None = None) -> Any:
        """The table as ``tp``; relative paths resolve against ``base`` (default: the file's
        directory)."""
        return validate(tp, self.data, file=self.file, prefix=self.prefix,
                        base=base if base is not None else _base_of(self.file))


def _base_of(file: str) -> Path:
    if file and not file.startswith("<"):
        return Path(file).resolve().parent
    return Path.cwd()


def validate(tp: Any, data: Any, *, file: str, prefix: str = "",
             base: Path | None = None) -> Any:
    """``data`` validated as ``tp``, or a :class:`ConfigError` naming the file and dotted key."""
    token = _LOADING.set(_Load(base))
    try:
        return _adapter(tp).validate_python(data)
    except ValidationError as exc:
        raise config_error(exc, tp, file, prefix) from None
    finally:
        _LOADING.reset(token)


@lru_cache(maxsize=64)
def _adapter(tp: Any) -> TypeAdapter[Any]:
    return TypeAdapter(tp)
