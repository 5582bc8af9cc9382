"""What every secret provider shares: the protocols, secret names, value checks."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol

from aftd.errors import SecretError

__all__ = [
    "DEFAULT_FIELD",
    "Provider",
    "SecretName",
    "SecretNotFoundError",
    "SecretResolver",
    "field_value",
    "parse_name",
]

DEFAULT_FIELD = "value"
# Names become KV paths under a prefix: no "..", no leading "/", no odd characters, so a name
# from a script or a claim cannot walk out of the prefix.
_NAME_RE = re.compile(r"[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*")
_FIELD_RE = re.compile(r"[A-Za-z0-9_.\-]+")


class SecretNotFoundError(SecretError):
    """No provider holds the secret (as opposed to a provider failing)."""


@dataclass(frozen=True)
class SecretName:
    """A parsed ``name`` or ``name#field``."""

    path: str
    field: str = DEFAULT_FIELD

    def __str__(self) -> str:
        return self.path if self.field == DEFAULT_FIELD else f"{self.path}#{self.field}"


def parse_name(name: str) -> SecretName:
    """Validate and split a secret name; the error quotes the name (names are not secret)."""
    if not isinstance(name, str):
        raise SecretError(f"secret name must be a string, got {type(name).__name__}")
    path, sep, fld = name.partition("#")
    if not _NAME_RE.fullmatch(path) or ".." in path.split("/"):
        raise SecretError(f"invalid secret name {name!r}: use letters, digits, '_', '-', '.' "
                          "and '/' between parts (optionally '#field')")
    if sep and not _FIELD_RE.fullmatch(fld):
        raise SecretError(f"invalid field in secret name {name!r}")
    return SecretName(path, fld if sep else DEFAULT_FIELD)


def field_value(name: SecretName, source: str, data: Any) -> str | None:
    """Pick ``name.field`` out of what a provider stored; ``None`` if the field is absent.

    A plain string only answers the default field; a table (dict) holds named fields.
    """
    if isinstance(data, dict):
        if name.field not in data:
            return None
        data = data[name.field]
    elif name.field != DEFAULT_FIELD:
        return None
    if isinstance(data, bool) or not isinstance(data, str | int | float):
        raise SecretError(f"secret {str(name)!r} in {source} is a {type(data).__name__}, "
                          "not a string")
    return str(data)


class SecretResolver(Protocol):
    """Resolves a secret by name at the moment it is needed, so a rotated secret is picked up.

    The daemon's provider chain implements it (:class:`aftd.secrets.chain.SecretChain`), and so
    does a worker process's channel to the daemon; VFS backends, the report outbox and the job
    context take any resolver.
    """

    async def get(self, name: str) -> str:
        """The value of ``name`` (``name#field`` selects a field); raises
        :class:`~aftd.errors.SecretError` naming the secret, never a value."""
        ...


class Provider(Protocol):
    """A source of secrets. ``lookup`` returns ``None`` when it does not hold the secret and
    raises :class:`SecretError` (naming the secret, never a value) when it cannot tell."""

    name: str

    def where(self, name: SecretName) -> str:
        """Where this provider looks for ``name`` (for error messages; never a value)."""
        ...

    async def lookup(self, name: SecretName) -> str | None: ...

    async def aclose(self) -> None: ...
