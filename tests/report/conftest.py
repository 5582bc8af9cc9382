"""Fixtures of the report tests: a real orchestrator server, a real secret chain (env provider
over a private mapping), outboxes on a temporary SQLite file, an sshd of the test's own."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# tests/ is not a package; make `tests.fixtures` importable however pytest was started.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from aftd.config import ReportsConfig  # noqa: E402
from aftd.report.outbox import Outbox  # noqa: E402
from aftd.secrets.chain import SecretChain  # noqa: E402
from aftd.secrets.config import SecretsConfig  # noqa: E402
from aftd.secrets.env import EnvProvider  # noqa: E402
from tests.fixtures.orchestrator import Orchestrator  # noqa: E402
from tests.fixtures.sshd import SshdServer, start_sshd  # noqa: E402
from tests.report.helpers import FAST  # noqa: E402

MakeOutbox = Callable[..., Awaitable[Outbox]]


@pytest.fixture
async def orch() -> AsyncIterator[Orchestrator]:
    o = Orchestrator(token="orch-secret-token-1234")
    await o.start()
    yield o
    await o.stop()


@pytest.fixture
def secret_env(orch: Orchestrator) -> dict[str, str]:
    """The env provider reads this mapping at every lookup: tests can add or change secrets."""
    return {"AFTD_SECRET_ORCH_API_URL": orch.url, "AFTD_SECRET_ORCH_API_TOKEN": orch.token}


@pytest.fixture
async def secrets(secret_env: dict[str, str]) -> AsyncIterator[SecretChain]:
    chain = SecretChain(SecretsConfig(order=("env",), cache_ttl_s=0.0),
                        providers=[EnvProvider(secret_env)])
    yield chain
    await chain.aclose()


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[SshdServer]:
    srv = start_sshd(tmp_path / "sshd")
    yield srv
    srv.kill()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "aftd.sqlite"


@pytest.fixture
async def make_outbox(db_path: Path, secrets: SecretChain) -> AsyncIterator[MakeOutbox]:
    boxes: list[Outbox] = []

    async def make(cfg: ReportsConfig = FAST, **kw: Any) -> Outbox:
        box = Outbox(db_path, cfg, secrets, **kw)
        await box.start()
        boxes.append(box)
        return box

    yield make
    for box in boxes:
        await box.aclose(flush_timeout_s=0)
