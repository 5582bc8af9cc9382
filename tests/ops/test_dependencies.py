"""Dependency floors exclude releases with known vulnerabilities; CI installs from a
constraints file that pins versions satisfying those floors; every declared runtime dependency
is imported by aftd/."""

from __future__ import annotations

import ast
import importlib.metadata
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

# The first release without the vulnerability (see the comment in pyproject.toml).
FIXED_IN = {"aiohttp": "3.12.14", "asyncssh": "2.14.2", "cryptography": "44.0.1"}


def _requirements(root: Path) -> dict[str, Requirement]:
    """Runtime dependencies: the required ones and those of the optional extras that aftd/
    imports (every extra but ``test``)."""
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    extras = project.get("optional-dependencies", {})
    lines = [*project["dependencies"],
             *(r for name, reqs in extras.items() if name != "test" for r in reqs)]
    reqs = [Requirement(r) for r in lines]
    return {r.name.lower(): r for r in reqs}


def _pins(root: Path) -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in (root / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin"
            pins[name.lower().replace("_", "-")] = Version(version)
    return pins


def test_floors_exclude_known_vulnerable_releases(repo_root: Path) -> None:
    reqs = _requirements(repo_root)
    for name, fixed in FIXED_IN.items():
        spec = reqs[name].specifier
        floors = [Version(s.version) for s in spec if s.operator == ">="]
        assert floors and min(floors) >= Version(fixed), (name, str(spec))


def test_constraints_pin_every_runtime_dependency_within_its_floor(repo_root: Path) -> None:
    pins = _pins(repo_root)
    for name, req in _requirements(repo_root).items():
        key = name.replace("_", "-")
        assert key in pins, f"constraints.txt does not pin {name}"
        assert req.specifier.contains(pins[key]), (name, str(pins[key]), str(req.specifier))
    assert "aftd" not in pins


def test_ci_installs_with_the_constraints(repo_root: Path) -> None:
    run = (repo_root / ".ci" / "run").read_text()
    assert "pip install -c constraints.txt -e '.[test]'" in run


def _top_level_imports(package: Path) -> set[str]:
    """Every top-level module name imported anywhere under ``package`` (lazy imports too)."""
    names: set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"aftd"}


def _distributions_of(modules: set[str]) -> set[str]:
    """The installed distributions that provide ``modules`` (``ahocorasick`` ->
    ``pyahocorasick``), normalised as in requirements."""
    providers = importlib.metadata.packages_distributions()
    return {dist.lower().replace("_", "-") for module in modules
            for dist in providers.get(module, ())}


def test_every_runtime_dependency_is_imported(repo_root: Path) -> None:
    imported = _distributions_of(_top_level_imports(repo_root / "aftd"))
    unused = sorted(name for name in _requirements(repo_root)
                    if name.replace("_", "-") not in imported)
    assert unused == [], f"declared in pyproject.toml but never imported by aftd/: {unused}"


def test_every_third_party_import_is_declared(repo_root: Path) -> None:
    """The converse: aftd/ imports nothing that only happens to be installed."""
    declared = {n.replace("_", "-") for n in _requirements(repo_root)}
    undeclared = sorted(_distributions_of(_top_level_imports(repo_root / "aftd")) - declared)
    assert undeclared == [], f"imported by aftd/ but not a runtime dependency: {undeclared}"


def test_the_import_scan_sees_lazy_imports_and_maps_names(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text("def f():\n    import ahocorasick\n    from yaml import x\n")
    assert _top_level_imports(tmp_path) == {"ahocorasick", "yaml"}
    assert "pyahocorasick" in _distributions_of({"ahocorasick"})
