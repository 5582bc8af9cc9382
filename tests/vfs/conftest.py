"""Fixtures for the VFS tests: local roots, real sshd servers, a dict-backed secret resolver."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # make `tests.fixtures` importable

from aftd.configparse import Section
from aftd.errors import SecretError
from aftd.vfs.config import parse_vfs_section
from aftd.vfs.registry import VfsPool
from tests.fixtures.sshd import SshdServer, start_sshd


class DictSecrets:
    """The SecretResolver protocol over a dict; counts look-ups to prove use-time resolution."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.calls: list[str] = []

    async def get(self, name: str) -> str:
        self.calls.append(name)
        try:
            return self.values[name]
        except KeyError:
            raise SecretError(f"secret {name!r} not found") from None


def make_pool(entries: dict[str, dict[str, Any]], secrets: DictSecrets) -> VfsPool:
    configs = parse_vfs_section(Section(entries, "test.toml", "vfs"))
    return VfsPool(configs, secrets)


@pytest.fixture(scope="session")
def sshd_a(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdServer]:
    srv = start_sshd(tmp_path_factory.mktemp("sshd_a"))
    yield srv
    srv.kill()


@pytest.fixture(scope="session")
def sshd_b(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdServer]:
    srv = start_sshd(tmp_path_factory.mktemp("sshd_b"))
    yield srv
    srv.kill()


@pytest.fixture
def sshd_own(tmp_path: Path) -> Iterator[SshdServer]:
    """A server of the test's own, for tests that kill it."""
    srv = start_sshd(tmp_path / "sshd")
    yield srv
    srv.kill()


@pytest.fixture
async def pool(tmp_path: Path, sshd_a: SshdServer, sshd_b: SshdServer) -> AsyncIterator[VfsPool]:
    """Four VFS: two local roots, and one sub-root on each of two sshd servers."""
    roots = {n: tmp_path / n for n in ("l1", "l2")}
    for r in roots.values():
        r.mkdir()
    sa, sb = sshd_a.root / tmp_path.name, sshd_b.root / tmp_path.name
    sa.mkdir()
    sb.mkdir()
    # Each server trusts its own user key, so each VFS names its own key secret.
    entries = {
        "l1": {"type": "local", "root": str(roots["l1"])},
        "l2": {"type": "local", "root": str(roots["l2"])},
        "s1": sshd_a.vfs_options(root=str(sa)),
        "s2": sshd_b.vfs_options(root=str(sb), key_secret="sshd-b-key"),
    }
    p = make_pool(entries, DictSecrets({"sshd-key": sshd_a.user_key_text,
                                        "sshd-b-key": sshd_b.user_key_text}))
    yield p
    await p.aclose()
