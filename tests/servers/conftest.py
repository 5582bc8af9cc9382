"""Smoke tests of the real servers that the cloud/FTP backends and the fleet store test against.

They prove each server starts, authenticates and does what the backends will rely on (and record
what it does not); the fixtures live in tests/fixtures/ for every area to import.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # make `tests.fixtures` importable

from tests.fixtures.s3 import S3Server


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.servers)


@pytest.fixture(params=["seaweedfs", "rclone_s3"])
def s3_server(request: pytest.FixtureRequest) -> S3Server:
    server: S3Server = request.getfixturevalue(request.param)
    return server
