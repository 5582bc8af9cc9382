"""The bundled claim-transfer-report workflow through the daemon with an FTPS source: vsftpd
(TLS required, TLS session reuse required on data connections) → SFTP (OpenSSH's sshd)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.fixtures.daemon import Api, vfs_table
from tests.fixtures.ftp import FtpServer
from tests.fixtures.orchestrator import Orchestrator
from tests.fixtures.sshd import SshdServer
from tests.report.e2e import BUNDLED, run_workflow, secret_env


async def test_ftps_to_sftp_through_the_daemon(
        make_daemon: Callable[..., Any], orch: Orchestrator, vsftpd: FtpServer,
        sshd: SshdServer, tmp_path: Path) -> None:
    outbound = f"outbound-{tmp_path.name}"
    payload = os.urandom(3 << 20)
    vsftpd.write(f"{outbound}/batch-9.bin", payload)
    os.utime(vsftpd.root / outbound / "batch-9.bin", (1_650_000_000, 1_650_000_000))
    (sshd.root / "inbound").mkdir(exist_ok=True)
    d = await make_daemon(
        scripts={"claim_transfer_report": BUNDLED},
        extra_config="\n".join([
            vfs_table("partner_ftps", vsftpd.vfs_options(root=f"/{outbound}")),
            vfs_table("archive", sshd.vfs_options())]),
        env=secret_env(orch, vsftpd.secrets, {"sshd-key": sshd.user_key_text}))
    orch.add_job("ftps-1", {"sourceVfs": "partner_ftps", "sourcePath": "batch-9.bin",
                            "destVfs": "archive", "destDir": "inbound"})
    api = Api(d)
    try:
        job = await run_workflow(api, "ftps-1")
    finally:
        await api.close()
    out = sshd.root / "inbound" / "batch-9.bin"
    assert out.read_bytes() == payload
    assert out.stat().st_mtime == 1_650_000_000
    assert job["progress"]["bytesDone"] == len(payload)
    assert orch.reports("ftps-1") == [{"jobId": "ftps-1", "status": "completed",
                                       "agent": "aftd"}]
    logs = d.logs()
    assert "ftp_connected" in logs
    assert vsftpd.password not in logs
    assert orch.token not in logs
