"""Finding scripts in ``scripts_dir`` and loading one afresh for each job.

A script is ``<scripts_dir>/<id>.py`` with ``async def main(job)``, or ``<scripts_dir>/<id>.js``,
a SyncJS script (always run in a worker process; see :mod:`aftd.scripts.syncjs`). Listing reads
metadata with ``ast`` or from the JavaScript's leading comment (no code runs); loading executes a
Python file in a worker thread under a unique module name so an edited script takes effect on the
next job and a broken one fails only its own job.
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
from types import CodeType, ModuleType
from typing import Any

from aftd.errors import AftdError
from aftd.scripts.syncjs.meta import parse_meta

__all__ = ["LANGUAGES", "ScriptError", "ScriptInfo", "ScriptLoader", "requires_tags"]

# File suffix -> language. A .py and a .js with the same stem make an ambiguous id.
LANGUAGES = {".py": "python", ".js": "syncjs"}
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
    # The module-level ``ISOLATION = "..."`` literal, unchecked (None: not declared); see
    # :func:`aftd.scripts.isolation.isolation_of`.
    isolation: object = None
    # ``TIMEOUT_S = <literal>`` as read from the source, for scripts not loaded in the daemon.
    timeout_s: object = None
    language: str = "python"  # or "syncjs"
    # ``REQUIRES_TAGS = [...]`` as read from the source (see :func:`requires_tags`).
    requires_tags: object = None


class ScriptLoader:
    def __init__(self, scripts_dir: Path) -> None:
        self.scripts_dir = scripts_dir

    def scripts(self) -> list[ScriptInfo]:
        """Every script, by id; where a .py and a .js share an id, the .py is listed (starting
        that id fails with an error naming both files)."""
        if not self.scripts_dir.is_dir():
            return []
        found: dict[str, Path] = {}
        for path in sorted(self.scripts_dir.iterdir()):
            if path.suffix in LANGUAGES and _ID_RE.match(path.stem) \
                    and not path.stem.startswith("_") and path.is_file() \
                    and (path.stem not in found or path.suffix == ".py"):
                found[path.stem] = path
        return [_describe(found[stem]) for stem in sorted(found)]

    def find(self, *, script_id: str | None = None, name: str | None = None) -> ScriptInfo:
        """Look a script up by exact id or case-insensitive name (display name or id)."""
        if script_id is not None:
            return _describe(self._path_of(script_id))
        wanted = (name or "").casefold()
        for info in self.scripts():
            if wanted in (info.name.casefold(), info.id.casefold()):
                return info
        raise ScriptError(f"unknown script name {name!r}")

    def _path_of(self, script_id: str) -> Path:
        if not _ID_RE.match(script_id):
            raise ScriptError(f"unknown script id {script_id!r}")
        paths = [p for suffix in LANGUAGES
                 if (p := self.scripts_dir / f"{script_id}{suffix}").is_file()]
        if not paths:
            raise ScriptError(f"unknown script id {script_id!r}")
        if len(paths) > 1:
            raise ScriptError(f"script id {script_id!r} is ambiguous: both "
                              f"{' and '.join(p.name for p in paths)} exist; rename one")
        return paths[0]

    def load_main(self, info: ScriptInfo) -> ScriptMain:
        """Execute the script file and return its ``main``; runs in a worker thread."""
        if info.language != "python":
            raise ScriptError(f"script {info.id!r} is a {info.language} script; it runs in a "
                              "worker process, not in the daemon")
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
        st = info.path.stat()
        # What the loader's exec_module does, minus finding and checking bytecode each time.
        exec(_compiled(info.path, st.st_mtime_ns, st.st_size), module.__dict__)  # noqa: S102
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


@functools.lru_cache(maxsize=256)
def _compiled(path: Path, _mtime_ns: int, _size: int) -> CodeType:
    """A script's code, compiled once per file version. Each job still runs it in a fresh
    module; without this every job compiled the file again wherever no bytecode cache can be
    written (a read-only scripts directory, ``PYTHONDONTWRITEBYTECODE``): milliseconds each."""
    return compile(path.read_bytes(), str(path), "exec", dont_inherit=True)


def _describe(path: Path) -> ScriptInfo:
    """Name and description from the module docstring and ``SCRIPT_NAME`` (a SyncJS script's
    leading comment), without executing.

    Parsed once per file version: triggers look scripts up on every request.
    """
    try:
        st = path.stat()
    except OSError:
        return _bare(path)
    return _parse_info(path, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=1024)
def _parse_info(path: Path, _mtime_ns: int, _size: int) -> ScriptInfo:
    if path.suffix == ".js":
        return _parse_js_info(path)
    name = path.stem
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return _bare(path)
    doc = (ast.get_docstring(tree) or "").strip().splitlines()[:1]
    consts = _module_constants(tree)
    script_name = consts.get("SCRIPT_NAME")
    if isinstance(script_name, str):
        name = script_name
    return ScriptInfo(id=path.stem, name=name, description=doc[0] if doc else "", path=path,
                      isolation=consts.get("ISOLATION"), timeout_s=consts.get("TIMEOUT_S"),
                      requires_tags=consts.get("REQUIRES_TAGS"))


def _bare(path: Path) -> ScriptInfo:
    """The id alone, for a file that cannot be read (the job that runs it says why)."""
    if path.suffix == ".js":
        return ScriptInfo(id=path.stem, name=path.stem, description="", path=path,
                          isolation="process", language="syncjs")
    return ScriptInfo(id=path.stem, name=path.stem, description="", path=path)


def _parse_js_info(path: Path) -> ScriptInfo:
    try:
        meta = parse_meta(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return _bare(path)
    return ScriptInfo(id=path.stem, name=meta.name or path.stem, description=meta.description,
                      path=path, isolation="process", timeout_s=meta.timeout_s,
                      language="syncjs", requires_tags=meta.requires_tags)


_METADATA = ("SCRIPT_NAME", "ISOLATION", "TIMEOUT_S", "REQUIRES_TAGS")
_TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/=@+-]{0,127}$")


def requires_tags(info: ScriptInfo) -> tuple[str, ...]:
    """The host tags a script's jobs need (``REQUIRES_TAGS = ["vfs:archive"]``, a literal list
    of tag strings read without running the script); :class:`ScriptError` if malformed."""
    value = info.requires_tags
    if value is None:
        return ()
    if isinstance(value, list | tuple) and all(
            isinstance(t, str) and _TAG_RE.match(t) for t in value):
        return tuple(value)
    raise ScriptError(f"script {info.id!r}: REQUIRES_TAGS must be a literal list of tags "
                      f"(letters, digits and _ . : / = @ + -), got {str(value)[:100]}")


def _module_constants(tree: ast.Module) -> dict[str, object]:
    """Module-level ``NAME = <literal>`` assignments of the metadata names (last one wins).

    A non-literal value is recorded as its source text in ``<...>`` so a check can name it.
    """
    out: dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id in _METADATA:
            out[target.id] = _literal(value, lists=target.id == "REQUIRES_TAGS")
    return out


def _literal(value: ast.expr, *, lists: bool) -> object:
    """A constant (or, with ``lists``, a list/tuple of constants); anything else as
    ``<source text>``."""
    if isinstance(value, ast.Constant):
        return value.value
    if lists and isinstance(value, ast.List | ast.Tuple) and all(
            isinstance(e, ast.Constant) for e in value.elts):
        return [e.value for e in value.elts if isinstance(e, ast.Constant)]
    return f"<{ast.unparse(value)}>"
