"""The public script API, ``aftd.script``: typed (mypy --strict accepts the daemon's job contexts
and the bundled examples as ``Job`` users, and refuses what breaks the contract), documented (every
member has a docstring), and the README's table of it matches the module both ways."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import textwrap
import typing
from pathlib import Path
from typing import Any

import pytest
from mypy import api as mypy_api

import aftd.script as script_api

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "aftd" / "examples" / "scripts").glob("*.py"))
CHECK_FILE = Path(__file__).with_name("typecheck_script_api.py")
SECTION = "### The script API (`aftd.script`)"


def _mypy(cache: Path, *args: str) -> tuple[str, int]:
    out, err, status = mypy_api.run(["--strict", "--cache-dir", str(cache),
                                     "--no-error-summary", *args])
    return out + err, status


@pytest.fixture(scope="module")
def mypy_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mypy-cache")


def test_job_contexts_and_examples_type_check_strictly(mypy_cache: Path) -> None:
    """The inline context and the worker's composition are ``Job``s; ``main(job: Job)`` in
    every bundled example (config/scripts is the same directory) passes mypy --strict."""
    assert len(EXAMPLES) >= 2
    for example in EXAMPLES:
        assert "main(job: Job)" in example.read_text(), example
    out, status = _mypy(mypy_cache, str(CHECK_FILE), *map(str, EXAMPLES))
    assert status == 0, out


BROKEN = '''
from aftd.script import Job, Vfs

class NoOutbox:
    id = "i"
    script_id = "s"
    def exit(self, code: int) -> None: ...

def as_job(x: NoOutbox) -> Job:
    return x

async def bad_policy(src: Vfs, dst: Vfs) -> None:
    await src.copy_to("p", dst, "d", overwrite="sometimes")

async def bad_param(job: Job) -> None:
    job.vfs(3)
'''


def test_mypy_refuses_what_breaks_the_job_contract(mypy_cache: Path, tmp_path: Path) -> None:
    """The check above can fail: an incomplete job, an unknown overwrite policy and a wrong
    argument type are each reported."""
    broken = tmp_path / "broken_script.py"
    broken.write_text(BROKEN)
    out, status = _mypy(mypy_cache, str(broken))
    assert status == 1, out
    lines = {int(m.group(1)) for m in re.finditer(r"broken_script.py:(\d+): error", out)}
    assert lines == {10, 13, 16}, out


# -- the README's table -------------------------------------------------------------------------

def _members(obj: Any) -> set[str]:
    """Public members: literal values, a function's parameters, or a class's own attributes,
    fields and the ``self.x`` its ``__init__`` assigns."""
    if typing.get_origin(obj) is typing.Literal:
        return {f'"{v}"' for v in typing.get_args(obj)}
    if inspect.isfunction(obj):
        return set(inspect.signature(obj).parameters)
    out = {n for n in vars(obj) if not n.startswith("_")}
    if dataclasses.is_dataclass(obj):
        out |= {f.name for f in dataclasses.fields(obj)}
    out |= set(getattr(obj, "_fields", ()))  # NamedTuple
    init = vars(obj).get("__init__")
    if inspect.isfunction(init) and not dataclasses.is_dataclass(obj):
        for node in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(init)))):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and \
                    isinstance(node.value, ast.Name) and node.value.id == "self" and \
                    not node.attr.startswith("_"):
                out.add(node.attr)
    return out


def _readme_table() -> dict[str, set[str]]:
    text = (ROOT / "README.md").read_text()
    assert SECTION in text, f"README.md lacks the section {SECTION!r}"
    body = text.split(SECTION, 1)[1].split("\n#", 1)[0]
    rows: dict[str, set[str]] = {}
    for line in body.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        name = re.fullmatch(r"`(\w+)(?:\(\))?`", cells[0]) if len(cells) == 3 else None
        if name is None:
            continue
        assert name.group(1) not in rows, f"README lists {name.group(1)} twice"
        rows[name.group(1)] = {m.removesuffix("()") for m in re.findall(r"`([^`]+)`", cells[2])}
    return rows


def test_readme_documents_every_public_name_and_member() -> None:
    rows = _readme_table()
    assert set(rows) == set(script_api.__all__), (
        f"in aftd.script only: {sorted(set(script_api.__all__) - set(rows))}; "
        f"in the README only: {sorted(set(rows) - set(script_api.__all__))}")
    for name, documented in rows.items():
        actual = _members(getattr(script_api, name))
        assert documented == actual, (
            f"{name}: members not in the README: {sorted(actual - documented)}; "
            f"in the README but not in the code: {sorted(documented - actual)}")


def test_every_public_member_has_a_docstring() -> None:
    for name in script_api.__all__:
        obj = getattr(script_api, name)
        if typing.get_origin(obj) is typing.Literal:
            continue
        assert inspect.getdoc(obj), f"{name} has no docstring"
        if not inspect.isclass(obj) or dataclasses.is_dataclass(obj) or \
                issubclass(obj, BaseException):
            continue  # fields and error attributes are described in the class's docstring
        for member, value in vars(obj).items():
            if member.startswith("_") or (not callable(value) and not isinstance(value, property)):
                continue
            assert inspect.getdoc(value), f"{name}.{member} has no docstring"
