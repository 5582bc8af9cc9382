"""The bundled claim-transfer-report workflow through the daemon between two object stores: a
claim naming an Azure Blob container (Azurite) as the source and a GCS bucket
(fake-gcs-server) as the destination, streamed with no local staging. Checks the object, its
modification time, the delivered report, the transfer metrics and that no secret was logged."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import urllib.request
import uuid
import warnings
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from azure.storage.blob.aio import BlobServiceClient

from tests.fixtures.azurite import AzuriteServer
from tests.fixtures.daemon import Api, vfs_table
from tests.fixtures.gcs import GcsServer
from tests.fixtures.orchestrator import Orchestrator
from tests.report.e2e import BUNDLED, run_workflow, secret_env

MTIME = "2022-04-15T05:20:00.25Z"  # rclone's metadata format, as another tool left it


def _gcs_object(server: GcsServer, bucket: str, name: str) -> tuple[dict[str, Any], bytes]:
    base = f"{server.endpoint}/storage/v1/b/{quote(bucket)}/o/{quote(name, safe='')}"
    with urllib.request.urlopen(base, timeout=10) as resp:  # noqa: S310 - loopback
        meta = json.loads(resp.read())
    with urllib.request.urlopen(base + "?alt=media", timeout=30) as resp:  # noqa: S310
        return meta, resp.read()


def _sample(metrics: str, name: str, labels: str) -> float | None:
    m = re.search(rf"^{name}\{{{re.escape(labels)}\}} (\S+)$", metrics, re.M)
    return float(m.group(1)) if m else None


async def test_azure_to_gcs_through_the_daemon(
        make_daemon: Callable[..., Any], orch: Orchestrator, azurite: AzuriteServer,
        fake_gcs: GcsServer) -> None:
    container, bucket = f"e2e-{uuid.uuid4().hex[:12]}", f"e2e-{uuid.uuid4().hex[:12]}"
    payload = os.urandom(5 << 20)  # several blocks and chunks at 1 MiB
    async with BlobServiceClient(azurite.account_url, credential=azurite.credential) as svc:
        await svc.create_container(container)
        with warnings.catch_warnings():  # aiohttp's "large body" ResourceWarning: loopback
            warnings.simplefilter("ignore", ResourceWarning)
            await svc.get_blob_client(container, "outbound/batch-7.bin").upload_blob(
                payload, metadata={"mtime": MTIME})
    fake_gcs.create_bucket(bucket)
    secrets = {**azurite.secrets, **fake_gcs.secrets}
    d = await make_daemon(
        scripts={"claim_transfer_report": BUNDLED},
        extra_config="\n".join([
            vfs_table("blob", azurite.vfs_options(container, prefix="outbound/",
                                               block_size_mib=1, read_chunk_mib=1)),
            vfs_table("lake", fake_gcs.vfs_options(bucket, prefix="inbound/", chunk_size_mib=1))]),
        env=secret_env(orch, secrets))
    orch.add_job("blob-1", {"sourceVfs": "blob", "sourcePath": "batch-7.bin",
                            "destVfs": "lake", "destDir": "today"})
    api = Api(d)
    try:
        job = await run_workflow(api, "blob-1", timeout=120)
        status, metrics = await api.request("GET", "/metrics")
        assert status == 200
    finally:
        await api.close()
    meta, data = _gcs_object(fake_gcs, bucket, "inbound/today/batch-7.bin")
    assert hashlib.sha256(data).digest() == hashlib.sha256(payload).digest()
    assert base64.b64decode(meta["md5Hash"]) == hashlib.md5(payload).digest()  # noqa: S324
    assert meta["metadata"]["mtime"].startswith("2022-04-15T05:20:00.25")
    assert job["progress"]["bytesDone"] == len(payload)
    assert orch.reports("blob-1") == [{"jobId": "blob-1", "status": "completed",
                                       "agent": "aftd"}]
    pair = 'dst_vfs="lake",src_vfs="blob"'
    assert _sample(metrics, "aftd_transfer_bytes_total", pair) == len(payload)
    assert _sample(metrics, "aftd_transfer_files_total", pair) == 1
    logs = d.logs()
    for value in (azurite.account_key, orch.token, json.loads(secrets["gcs-sa-json"])
                  ["private_key"].splitlines()[1]):
        assert value not in logs
