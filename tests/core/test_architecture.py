"""The import graph of aftd/, read with ``ast``: no cycles, and layers as DESIGN's module map
states them (vfs/ and secrets/ know nothing of the layers above; api/ reaches jobs/ only through
the runner and the store). Imports under ``if TYPE_CHECKING:`` count too: a cycle that only the
type checker sees is still a knot."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "aftd"

# Lower layers: each of these imports nothing from the packages listed for it.
FORBIDDEN = {
    "aftd.vfs": ("aftd.api", "aftd.jobs", "aftd.scripts", "aftd.report"),
    "aftd.secrets": ("aftd.api", "aftd.jobs", "aftd.scripts", "aftd.report", "aftd.vfs"),
}
# What api/ may import from jobs/: the runner, the store and the records they return.
API_MAY_USE_FROM_JOBS = {"aftd.jobs.runner", "aftd.jobs.store", "aftd.jobs.model"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imported(module: str, path: Path, known: set[str]) -> Iterator[str]:
    """The aftd modules ``module`` imports (``from pkg import mod`` names ``pkg.mod``)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for name in targets:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name.startswith("aftd") and name != module:
                yield name


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph = {m: set(_imported(m, p, set(mods))) for m, p in mods.items()}
    # A package's __init__ is imported with any of its modules, but it may import its own
    # modules without a cycle: only count what it imports from outside the package.
    for m in graph:
        if mods[m].name == "__init__.py":
            graph[m] = {t for t in graph[m] if not t.startswith(m + ".")}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _package(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_the_graph_is_read() -> None:
    graph = _graph()
    assert "aftd.vfs.copy" in graph["aftd.vfs.handle"]
    assert "aftd.scripts.loader" in graph["aftd.jobs.runner"]


def test_no_module_imports_itself_in_a_cycle() -> None:
    assert _cycles(_graph()) == []


def test_no_two_packages_import_each_other() -> None:
    graph = _graph()
    packages: dict[str, set[str]] = {}
    for module, targets in graph.items():
        packages.setdefault(_package(module), set()).update(
            _package(t) for t in targets if _package(t) != _package(module))
    assert _cycles(packages) == []


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_lower_layers_import_nothing_above_them(layer: str) -> None:
    bad = sorted(f"{m} -> {t}" for m, targets in _graph().items()
                 if m == layer or m.startswith(layer + ".")
                 for t in targets if t.startswith(FORBIDDEN[layer]))
    assert bad == []


def test_api_reaches_jobs_only_through_the_runner_and_the_store() -> None:
    bad = sorted(f"{m} -> {t}" for m, targets in _graph().items()
                 if m.startswith("aftd.api")
                 for t in targets
                 if t.startswith("aftd.jobs") and t not in API_MAY_USE_FROM_JOBS)
    assert bad == []


def test_the_cycle_finder_finds_cycles() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_comments_cite_nothing_outside_the_repo() -> None:
    """A numbered invariant or issue means nothing to a reader of the repository: name the
    README section (its "Invariants" list) or the doc instead."""
    cite = re.compile(r"\b(invariant|issue)\s*#?\d", re.IGNORECASE)
    found = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
             for folder in ("aftd", "tests", "bench")
             for path in sorted((ROOT / folder).rglob("*.py"))
             for n, line in enumerate(path.read_text().splitlines(), 1)
             if cite.search(line) and "cite = re.compile" not in line]
    assert found == []
