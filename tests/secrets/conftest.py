"""Fixtures for the secrets tests: the shared OpenBao dev server and chain builders."""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

# tests/ is not a package; make `tests.fixtures` importable however pytest was started.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from aftd.secrets.chain import SecretChain  # noqa: E402
from aftd.secrets.config import SecretsConfig, VaultConfig  # noqa: E402
from tests.fixtures.openbao import OpenBaoServer  # noqa: E402
from tests.secrets.helpers import write_private  # noqa: E402


@pytest.fixture
def uniq() -> str:
    """A unique path segment so tests sharing one OpenBao server do not collide."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
async def make_chain(tmp_path: Path) -> AsyncIterator[Callable[..., SecretChain]]:
    """Build vault-backed chains against a server; all are closed at teardown."""
    chains: list[SecretChain] = []

    def build(server: OpenBaoServer, *, ttl: float = 30.0, token: str | None = None,
              **vault: Any) -> SecretChain:
        if vault.get("auth", "token") == "token" and "token_file" not in vault:
            name = f"token-{len(chains)}"
            vault["token_file"] = write_private(tmp_path / name, token or server.token)
        cfg = SecretsConfig(order=("vault",), cache_ttl_s=ttl,
                            vault=VaultConfig(url=server.url, timeout_s=3.0, **vault))
        chain = SecretChain(cfg)
        chains.append(chain)
        return chain

    yield build
    for chain in chains:
        await chain.aclose()
