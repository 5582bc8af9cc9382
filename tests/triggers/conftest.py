"""Fixtures for the trigger tests: scripts, config snippets, waiting for fired jobs."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # make `tests.fixtures` importable

from tests.fixtures.sshd import SshdServer, start_sshd


@pytest.fixture(scope="session")
def sshd_triggers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdServer]:
    srv = start_sshd(tmp_path_factory.mktemp("sshd_triggers"))
    yield srv
    srv.kill()
