"""Finding scripts in ``scripts_dir`` and loading one afresh for each job.

A script is ``<scripts_dir>/<id>.py`` with ``async def main(job)``. Listing reads metadata with
``ast`` (no code runs); loading executes the file in a worker thread under a unique module name
so an edited script takes effect on the next job and a broken one fails only its own job.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import inspect
import re
import sys
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from aftd.errors import AftdError

__all__ = ["ScriptError", "ScriptInfo", "ScriptLoader"]

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

ScriptMain = Callable[[Any], Awaitable[Any]]


class ScriptError(AftdError):
    """A script is unknown, cannot be imported, or has no usable ``main``."""


@dataclass(frozen=True)
class ScriptInfo:
    id: str
    name: str
    description: str
    path: Path

    def to_api(self) -> dict[str, str]:
        return {"scriptId": self.id, "name": self.name, "description": self.description}


class ScriptLoader:
    def __init__(self, scripts_dir: Path) -> None:
        self.scripts_dir = scripts_dir

    def scripts(self) -> list[ScriptInfo]:
        if not self.scripts_dir.is_dir():
            return []
        out = []
        for path in sorted(self.scripts_dir.glob("*.py")):
            if _ID_RE.match(path.stem) and not path.stem.startswith("_"):
                out.append(_describe(path))
        return out

    def find(self, *, script_id: str | None = None, name: str | None = None) -> ScriptInfo:
        """Look a script up by exact id or case-insensitive name (display name or id)."""
        if script_id is not None:
            if not _ID_RE.match(script_id):
                raise ScriptError(f"unknown script id {script_id!r}")
            path = self.scripts_dir / f"{script_id}.py"
            if not path.is_file():
                raise ScriptError(f"unknown script id {script_id!r}")
            return _describe(path)
        wanted = (name or "").casefold()
        for info in self.scripts():
            if wanted in (info.name.casefold(), info.id.casefold()):
                return info
        raise ScriptError(f"unknown script name {name!r}")

    def load_main(self, info: ScriptInfo) -> ScriptMain:
        """Execute the script file and return its ``main``; runs in a worker thread."""
        module = _exec_module(info)
        main = getattr(module, "main", None)
        if main is None or not inspect.iscoroutinefunction(main):
            raise ScriptError(f"script {info.id!r} ({info.path}) must define `async def main(job)`")
        return main  # type: ignore[no-any-return]


def _exec_module(info: ScriptInfo) -> ModuleType:
    mod_name = f"aftd_script_{info.id.replace('.', '_').replace('-', '_')}_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(mod_name, info.path)
    if spec is None or spec.loader is None:
        raise ScriptError(f"script {info.id!r}: cannot load {info.path}")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise ScriptError(
            f"script {info.id!r} failed to import: SyntaxError: {exc.msg} (line {exc.lineno})"
        ) from exc
    except Exception as exc:
        raise ScriptError(
            f"script {info.id!r} failed to import: {type(exc).__name__}: {exc}") from exc
    finally:
        # Never keep per-job modules around: they would leak memory job after job.
        sys.modules.pop(mod_name, None)
    return module


def _describe(path: Path) -> ScriptInfo:
    """Name and description from the module docstring and ``SCRIPT_NAME``, without executing.

    Parsed once per file version: triggers look scripts up on every request.
    """
    try:
        st = path.stat()
    except OSError:
        return ScriptInfo(id=path.stem, name=path.stem, description="", path=path)
    return _parse_info(path, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=1024)
def _parse_info(path: Path, _mtime_ns: int, _size: int) -> ScriptInfo:
    name = path.stem
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return ScriptInfo(id=path.stem, name=name, description="", path=path)
    doc = (ast.get_docstring(tree) or "").strip().splitlines()[:1]
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and node.targets[0].id == "SCRIPT_NAME"
                and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
            name = node.value.value
    return ScriptInfo(id=path.stem, name=name, description=doc[0] if doc else "", path=path)
