"""One daemon with tight limits for the hostile-client tests, started once per module."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# tests/ is not a package; make `tests.fixtures` importable however pytest was started.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from tests.conftest import HELLO  # noqa: E402
from tests.fixtures.daemon import DaemonProcess, start_sync  # noqa: E402

# Short deadlines so the tests see them fire; generous enough for a loaded 2-core machine.
TIGHT = """
max_params_bytes = 4096
max_page_bytes = 65536
header_timeout_s = 2
body_timeout_s = 2
keepalive_timeout_s = 2
max_connections = 64
"""


# A job whose report cannot be delivered (nothing listens on port 9 of loopback): its record
# carries a pending `report` object (the OpenAPI tests check it against the schema).
REPORTER = """
async def main(job):
    rid = await job.outbox.record_intent(
        job.id, url="http://127.0.0.1:9/report", token_secret=None,
        failure_body={"status": "failed"}, idempotency_key="k-" + job.id)
    await job.outbox.submit(rid, {"status": "completed"})
"""


def spawn(tmp: Path, **kw: Any) -> DaemonProcess:
    kw.setdefault("scripts", {"hello": HELLO})
    d = DaemonProcess(tmp, **kw)
    start_sync(d)
    return d


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    d = spawn(tmp_path_factory.mktemp("hostile"), server_config=TIGHT)
    yield d
    d.stop()
