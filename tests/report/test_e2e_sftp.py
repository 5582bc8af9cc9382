"""The bundled workflow end to end with every real part: the daemon process, secrets from an
OpenBao dev server (orchestrator URL and token, SSH key), local → SFTP against OpenSSH's sshd."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.fixtures.daemon import Api, vfs_table
from tests.fixtures.openbao import OpenBaoServer
from tests.fixtures.orchestrator import Orchestrator
from tests.fixtures.sshd import SshdServer
from tests.report.e2e import BUNDLED, run_workflow


async def test_local_to_sftp_with_openbao_secrets(
        make_daemon: Callable[..., Any], orch: Orchestrator, openbao: OpenBaoServer,
        sshd: SshdServer, tmp_path: Path) -> None:
    prefix = f"aftd-report-{os.getpid()}/"
    openbao.write_kv(f"{prefix}orch-api-url", {"value": orch.url})
    openbao.write_kv(f"{prefix}orch-api-token", {"value": orch.token})
    openbao.write_kv(f"{prefix}sshd-key", {"value": sshd.user_key_text})
    token_file = tmp_path / "vault-token"
    token_file.write_text(openbao.create_token(
        policies=[openbao.read_policy("aftd-report-read", prefix=prefix)]))
    token_file.chmod(0o600)
    src = tmp_path / "src"
    src.mkdir()
    payload = os.urandom(3 << 20)
    (src / "batch-7.bin").write_bytes(payload)
    (sshd.root / "inbound").mkdir(exist_ok=True)
    partner = vfs_table("partner", sshd.vfs_options())
    d = await make_daemon(scripts={"claim_transfer_report": BUNDLED}, extra_config=f"""
[secrets]
order = ["vault"]
[secrets.vault]
url = "{openbao.url}"
auth = "token"
token_file = "{token_file}"
prefix = "{prefix}"
[vfs.src]
type = "local"
root = "{src}"
{partner}
""")
    orch.add_job("abc-123", {"sourceVfs": "src", "sourcePath": "batch-7.bin",
                             "destVfs": "partner", "destDir": "inbound"})
    api = Api(d)
    try:
        job = await run_workflow(api, "abc-123")
    finally:
        await api.close()
    assert (sshd.root / "inbound" / "batch-7.bin").read_bytes() == payload
    assert job["report"]["state"] == "delivered"
    assert orch.reports("abc-123") == [{"jobId": "abc-123", "status": "completed",
                                        "agent": "aftd"}]
    logs = d.logs()
    assert orch.token not in logs
    assert token_file.read_text() not in logs
