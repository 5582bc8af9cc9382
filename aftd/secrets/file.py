"""``file`` provider: a TOML file of ``name = value`` (or ``[name]`` tables of fields).

The file is refused unless only its owner can read it (mode 0600 or stricter). It is re-read
when it changes on disk, so an operator can rotate a value without a restart.
"""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path
from typing import Any

from aftd import executors
from aftd.errors import SecretError
from aftd.secrets.base import SecretName, field_value

__all__ = ["FileProvider", "check_private"]


def check_private(path: Path, st: os.stat_result) -> None:
    """Refuse a secrets file that group or others can access."""
    if not stat.S_ISREG(st.st_mode):
        raise SecretError(f"secrets file {path} is not a regular file")
    if st.st_mode & 0o077:
        raise SecretError(f"secrets file {path} has mode {stat.S_IMODE(st.st_mode):04o}; "
                          f"refusing it: it must be 0600 or stricter (chmod 600 {path})")


class FileProvider:
    """Secrets from a private TOML file. Construction loads and checks the file."""

    name = "file"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int, int, int] | None = None
        self._data: dict[str, Any] = {}
        self._reload_if_changed()

    def __repr__(self) -> str:
        return f"FileProvider(path={str(self.path)!r})"

    def where(self, name: SecretName) -> str:
        return str(self.path)

    async def lookup(self, name: SecretName) -> str | None:
        # stat (and a re-read after a change) is disk I/O: off the loop, on the secrets pool.
        await executors.run(executors.SECRETS, self._reload_if_changed)
        data = _dig(self._data, name.path)
        if data is None:
            return None
        return field_value(name, f"secrets file {self.path}", data)

    async def aclose(self) -> None:
        self._data = {}

    def _reload_if_changed(self) -> None:
        try:
            st = self.path.stat()
        except OSError as exc:
            raise SecretError(f"secrets file {self.path}: cannot read: "
                              f"{exc.strerror or type(exc).__name__}") from None
        # Checked on every access: a chmod 644 after start-up is refused too.
        check_private(self.path, st)
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if stamp != self._stamp:
            self._data = _load(self.path)
            self._stamp = stamp


def _load(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SecretError(f"secrets file {path}: cannot read: "
                          f"{exc.strerror or type(exc).__name__}") from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise SecretError(f"secrets file {path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        # The parser's message holds a line/column, not the offending text.
        raise SecretError(f"secrets file {path} is not valid TOML: {_position(exc)}") from None


def _position(exc: tomllib.TOMLDecodeError) -> str:
    msg = str(exc)
    # Keep only "(at line N, column M)"; the rest could quote part of a value.
    start = msg.rfind("(at line")
    return msg[start:] if start >= 0 else "syntax error"


def _dig(data: dict[str, Any], path: str) -> Any:
    """A flat key ``"team/api"`` first, then nested tables ``[team] api = ...``."""
    if path in data:
        return data[path]
    node: Any = data
    for part in path.split("/"):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node
