"""The linters and the strict type check that pyproject.toml configures, as part of the suite."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str) -> list[str]:
    if shutil.which(name) is None and not (Path(sys.executable).parent / name).exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is required in CI (pip install -e '.[test]')")
        pytest.skip(f"{name} not installed")
    return [sys.executable, "-m", name]


def test_ruff() -> None:
    r = subprocess.run([*_tool("ruff"), "check", "aftd", "tests", "bench"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_strict() -> None:
    r = subprocess.run(_tool("mypy"), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
