"""The bundled claim-transfer-report workflow through the daemon with S3 on either side: an
object in a SeaweedFS bucket → SFTP (OpenSSH's sshd), and vsftpd over FTPS → the bucket."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.daemon import Api, vfs_table
from tests.fixtures.ftp import FtpServer
from tests.fixtures.orchestrator import Orchestrator
from tests.fixtures.s3 import S3Server
from tests.fixtures.sshd import SshdServer
from tests.report.e2e import BUNDLED, run_workflow, secret_env

pytestmark = pytest.mark.slow


@pytest.fixture
def bucket(seaweedfs: S3Server) -> str:
    name = f"e2e-{uuid.uuid4().hex[:12]}"
    seaweedfs.create_bucket(name)
    return name


async def _run(d: Any, orch: Orchestrator, job_id: str, size: int) -> dict[str, Any]:
    api = Api(d)
    try:
        job = await run_workflow(api, job_id)
    finally:
        await api.close()
    assert job["progress"]["bytesDone"] == size
    assert orch.reports(job_id) == [{"jobId": job_id, "status": "completed", "agent": "aftd"}]
    return dict(job)


async def test_s3_to_sftp_through_the_daemon(
        make_daemon: Callable[..., Any], orch: Orchestrator, seaweedfs: S3Server,
        bucket: str, sshd: SshdServer) -> None:
    payload = os.urandom(20 << 20)  # a multipart-sized object, read in one streaming GET
    client = seaweedfs.sync_client()
    try:
        client.put_object(Bucket=bucket, Key="inbound/batch-7.bin", Body=payload,
                          Metadata={"mtime": "1650000000.000000000"})
    finally:
        client.close()
    (sshd.root / "inbound").mkdir(exist_ok=True)
    d = await make_daemon(
        scripts={"claim_transfer_report": BUNDLED},
        extra_config="\n".join([vfs_table("lake", seaweedfs.vfs_options(bucket, prefix="inbound/")),
                                vfs_table("archive", sshd.vfs_options())]),
        env=secret_env(orch, seaweedfs.secrets, {"sshd-key": sshd.user_key_text}))
    orch.add_job("s3-1", {"sourceVfs": "lake", "sourcePath": "batch-7.bin",
                          "destVfs": "archive", "destDir": "inbound"})
    await _run(d, orch, "s3-1", len(payload))
    out = sshd.root / "inbound" / "batch-7.bin"
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(payload).digest()
    assert out.stat().st_mtime == 1_650_000_000
    logs = d.logs()
    assert seaweedfs.secret_key not in logs and orch.token not in logs


async def test_ftps_to_s3_through_the_daemon(
        make_daemon: Callable[..., Any], orch: Orchestrator, vsftpd: FtpServer,
        seaweedfs: S3Server, bucket: str, tmp_path: Path) -> None:
    outbound = f"outbound-{tmp_path.name}"
    payload = os.urandom(40 << 20)  # three 16 MiB parts
    vsftpd.write(f"{outbound}/drop-3.bin", payload)
    os.utime(vsftpd.root / outbound / "drop-3.bin", (1_650_000_000, 1_650_000_000))
    d = await make_daemon(
        scripts={"claim_transfer_report": BUNDLED},
        extra_config="\n".join([
            vfs_table("partner_ftps", vsftpd.vfs_options(root=f"/{outbound}")),
            vfs_table("lake", seaweedfs.vfs_options(bucket, prefix="landing/"))]),
        env=secret_env(orch, vsftpd.secrets, seaweedfs.secrets))
    orch.add_job("ftps-s3-1", {"sourceVfs": "partner_ftps", "sourcePath": "drop-3.bin",
                               "destVfs": "lake", "destDir": "in"})
    await _run(d, orch, "ftps-s3-1", len(payload))
    client = seaweedfs.sync_client()
    try:
        obj = client.get_object(Bucket=bucket, Key="landing/in/drop-3.bin")
        stored = obj["Body"].read()
        uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    finally:
        client.close()
    assert hashlib.sha256(stored).digest() == hashlib.sha256(payload).digest()
    assert float(obj["Metadata"]["mtime"]) == 1_650_000_000
    assert uploads == []
    logs = d.logs()
    assert vsftpd.password not in logs and seaweedfs.secret_key not in logs
