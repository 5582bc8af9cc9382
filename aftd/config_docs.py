"""Generate the example config, the config reference and its JSON Schema from the models.

    python -m aftd.config_docs --write   # rewrite the files below
    python -m aftd.config_docs --check   # exit 1 if they differ from the models

Writes ``config/aftd.example.toml`` (every key with its default and description; it loads with
``aftd check-config``), ``docs/config.md`` and ``docs/config.schema.json`` (for editors that
validate TOML against a JSON Schema). Descriptions come from the models' ``Field``s and
docstrings, so they are edited there, never in the generated files.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import textwrap
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from aftd.config import Config
from aftd.configerrors import describe, unwrap

__all__ = ["OUTPUTS", "Table", "check", "main", "render", "tables", "write"]

ROOT = Path(__file__).resolve().parents[1]
OUTPUTS: dict[str, Callable[[], str]] = {
    "config/aftd.example.toml": lambda: render_example(),
    "docs/config.md": lambda: render_reference(),
    "docs/config.schema.json": lambda: json.dumps(Config.model_json_schema(), indent=2) + "\n",
}
_WIDTH = 100
# The constraint objects (annotated_types.Ge, ...) a Field's bounds become, by attribute.
_BOUNDS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))


@dataclass
class Table:
    """One TOML table of the example: its header, its model, and values that differ from the
    defaults (an example entry's name, root, …)."""

    header: str
    model: type[BaseModel]
    example: dict[str, Any] = field(default_factory=dict)
    title: str = ""  # the reference's heading, when not the header
    # Shown commented out in the example config (an example trigger must not fire for real).
    commented: bool = False

    def keys(self) -> Iterator[tuple[str, FieldInfo]]:
        for name, info in self.model.model_fields.items():
            if not info.exclude and _subtable(info) is None:
                yield name, info


def tables(model: type[BaseModel] = Config, prefix: str = "") -> Iterator[Table]:
    """Every table of ``model``, in declaration order, nested tables after their parent."""
    for name, info in model.model_fields.items():
        kind = _subtable(info)
        dotted = f"{prefix}.{name}" if prefix else name
        if kind == "table":
            sub = unwrap(info.annotation)[0]
            yield Table(f"[{dotted}]", sub)
            yield from tables(sub, dotted)
        elif kind == "array":
            item = typing.get_args(unwrap(info.annotation)[0])[0]
            registry = unwrap(item)[1]
            if registry is None:
                yield Table(f"[[{dotted}]]", item, dict(getattr(item, "EXAMPLE", {})))
                continue
            for ttype in registry.names:  # an array of type-discriminated tables
                sub = registry.model(ttype)
                yield Table(f"[[{dotted}]]", sub, dict(getattr(sub, "EXAMPLE", {})),
                            f'`[[{dotted}]]` with `type = "{ttype}"`', commented=True)
        elif kind == "types":
            registry = unwrap(typing.get_args(unwrap(info.annotation)[0])[1])[1]
            assert registry is not None
            for vtype in registry.names:
                sub = registry.model(vtype)
                example = dict(getattr(sub, "EXAMPLE", {}))
                entry = example.pop("name", vtype)
                yield Table(f"[{dotted}.{entry}]", sub, example,
                            f'`[{dotted}.NAME]` with `type = "{vtype}"`')


def _subtable(info: FieldInfo) -> Literal["table", "array", "types"] | None:
    """How a field appears in TOML when it is not a plain key = value."""
    bare, _ = unwrap(info.annotation)
    if isinstance(bare, type) and issubclass(bare, BaseModel):
        return "table"
    if typing.get_origin(bare) is dict and unwrap(typing.get_args(bare)[1])[1] is not None:
        return "types"
    if describe(info.annotation) == "an array of tables ([[...]])":
        return "array"
    return None


# -- the example -------------------------------------------------------------------------------

def render_example() -> str:
    out = [_comment(
        "aftd example configuration, generated from the config models by `python -m "
        "aftd.config_docs --write` (change the models, not this file). Every key is shown with "
        "its default and what it does; keys that are unset by default are commented out, and "
        "so are the example [[triggers]] (uncomment and adapt them). "
        "Unknown keys are errors. Validate with: aftd check-config --config FILE. "
        "Reference: docs/config.md.")]
    for table in tables():
        keys = list(table.keys())
        if not keys:
            continue
        out.append("")
        out.append(_comment(_doc(table.model)))
        out.append(f"{'# ' if table.commented else ''}{table.header}")
        for name, info in keys:
            out.append(_comment(info.description or ""))
            value, commented = _example_value(name, info, table.example)
            out.append(f"{'# ' if commented or table.commented else ''}{name} = {value}")
            if len(out[-1]) > _WIDTH and value.startswith("["):  # one item a line
                items = value[1:-1].split(", ")
                out[-1] = f"{name} = [\n" + "".join(f"    {v},\n" for v in items) + "]"
    return "\n".join(out) + "\n"


def _example_value(name: str, info: FieldInfo, example: dict[str, Any]) -> tuple[str, bool]:
    """The value to write, and whether to comment it out (unset by default)."""
    if name in example:
        return toml_value(example[name]), False
    if name == "type":
        return toml_value(typing.get_args(info.annotation)[0]), False
    if info.is_required() or info.default_factory is not None:
        if info.examples:
            return toml_value(info.examples[0]), False
        return toml_value(info.get_default(call_default_factory=True)), False
    if info.default is None:
        return toml_value(info.examples[0] if info.examples else ""), True
    return toml_value(info.default), False


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items())
        return f"{{ {items} }}" if items else "{}"
    return json.dumps(str(value), ensure_ascii=False)


def _comment(text: str) -> str:
    return "\n".join(textwrap.wrap(text, _WIDTH, initial_indent="# ", subsequent_indent="# "))


def _doc(model: type[BaseModel]) -> str:
    return " ".join((inspect.getdoc(model) or "").split()).replace("``", "`")


# -- the reference -----------------------------------------------------------------------------

_INTRO = """\
# Configuration reference

Generated from the config models (`aftd/config.py` and the `*config.py` modules beside the code
they configure) by `python -m aftd.config_docs --write`; a test fails when this file, the example
[`config/aftd.example.toml`](../config/aftd.example.toml) or the JSON Schema
[`config.schema.json`](config.schema.json) drift from the models.

aftd reads one TOML file (`aftd serve --config FILE`; check it with `aftd check-config --config
FILE`). Every key is optional unless a feature needs it; **unknown keys are errors**. Values keep
their TOML type: `true` is not a number and `"5"` is not an integer. Relative paths are resolved
against the directory of the config file. An error names the file, the dotted key and the
reason, e.g. `/etc/aftd/aftd.toml: vfs.partner.port: must be <= 65535, got 70000` or
`/etc/aftd/aftd.toml: auth.api_keys[0].sha256: must be a 64-character hex SHA-256 digest`.

`[vfs.NAME]` tables are chosen by their `type`: each type declares its own keys in its own module
(`aftd/vfs/<type>_config.py`) registered in `aftd/vfs/config.py` (`VFS_TYPES`), so a backend
type is added by adding a module and a line there. `[[triggers]]` entries are chosen by their
`type` the same way (`aftd/triggers/<type>_config.py`, `TRIGGER_TYPES` in
`aftd/triggers/config.py`).
"""


def render_reference() -> str:
    out = [_INTRO]
    for table in tables():
        out.append(f"## {table.title or f'`{table.header}`'}\n")
        out.append(_doc(table.model) + "\n")
        keys = list(table.keys())
        if keys:
            out.append("| key | type | default | description |")
            out.append("|---|---|---|---|")
            for name, info in keys:
                out.append(f"| `{name}` | {_type_text(info)} | {_default_text(name, info)} | "
                           f"{_md(info.description or '')} |")
            out.append("")
    return "\n".join(out)


def _type_text(info: FieldInfo) -> str:
    extra = info.json_schema_extra
    alts = extra.get("anyOf") if isinstance(extra, dict) else None
    if isinstance(alts, list):
        return " or ".join(_schema_text(alt) for alt in alts)
    bare = unwrap(info.annotation)[0]
    if typing.get_origin(bare) is Literal:
        return " \\| ".join(f'`"{a}"`' for a in typing.get_args(bare))
    words = describe(Annotated[(info.annotation, *info.metadata)] if info.metadata
                     else info.annotation).removeprefix("an ").removeprefix("a ")
    limits = [f"{op} {getattr(m, attr)}" for m in info.metadata
              for attr, op in _BOUNDS if getattr(m, attr, None) is not None]
    if any(getattr(m, "min_length", 0) for m in info.metadata):
        limits.append("not empty")
    return _md(words + (f" ({', '.join(limits)})" if limits else ""))


def _schema_text(alt: Any) -> str:
    """One alternative of a key's explicit ``anyOf`` schema (``"auto"`` or a bounded integer)."""
    if isinstance(alt, dict) and "const" in alt:
        return f'`"{alt["const"]}"`' if isinstance(alt["const"], str) else f"`{alt['const']}`"
    if isinstance(alt, dict) and alt.get("type") == "integer":
        limits = [f"{op} {alt[k]}" for k, op in (("minimum", ">="), ("maximum", "<="))
                  if k in alt]
        return "integer" + (f" ({', '.join(limits)})" if limits else "")
    return "a valid value"


def _default_text(name: str, info: FieldInfo) -> str:
    if name == "type" or info.is_required():
        return "required"
    if info.default_factory is not None:
        return "see description"
    if info.default is None:
        return "unset"
    return f"`{_md(toml_value(info.default))}`"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("``", "`")


# -- files -------------------------------------------------------------------------------------

def render() -> dict[str, str]:
    return {path: make() for path, make in OUTPUTS.items()}


def check(root: Path = ROOT) -> list[str]:
    """The generated files that differ from the models."""
    stale = []
    for path, text in render().items():
        target = root / path
        if not target.is_file() or target.read_text(encoding="utf-8") != text:
            stale.append(path)
    return stale


def write(root: Path = ROOT) -> list[str]:
    written = []
    for path, text in render().items():
        target = root / path
        if not target.is_file() or target.read_text(encoding="utf-8") != text:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aftd.config_docs", description=__doc__
                                     .splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="rewrite the generated files")
    mode.add_argument("--check", action="store_true", help="exit 1 if they are out of date")
    args = parser.parse_args(argv)
    if args.write:
        for path in write():
            print(f"wrote {path}")
        return 0
    stale = check()
    for path in stale:
        print(f"{path} is out of date: run python -m aftd.config_docs --write", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
