"""The Azure Blob and GCS backends when things go wrong: the server killed (SIGKILL) in the middle
of a transfer and started again, wrong or malformed credentials, a rotated secret."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from pathlib import Path

import pytest

from aftd.errors import TransferError
from aftd.vfs.handle import VfsHandle
from tests.fixtures.azurite import AzuriteServer
from tests.vfs.blob_fixtures import (
    PREFIX,
    BlobStore,
    Bytes,
    azure_store,
    blob_store,
)
from tests.vfs.conftest import DictSecrets, make_pool, progress_to, stat_error

__all__ = ["azure_store", "blob_store"]  # fixtures, for pytest (servers: tests/vfs/conftest.py)

MIB = 1 << 20
SIZE = 32 * MIB


async def run_until(store: BlobStore, coro: object, at: int) -> tuple[asyncio.Task[object], Bytes]:
    """Start the copy ``coro`` and return once ``at`` bytes have been confirmed."""
    sink = Bytes()
    with progress_to(sink):
        task: asyncio.Task[object] = asyncio.create_task(coro)  # type: ignore[arg-type]
    while sink.done < at and not task.done():
        await asyncio.sleep(0.005)
    assert not task.done(), "the copy ended before the server could be killed"
    return task, sink


async def kill_and_restart(store: BlobStore, down_s: float = 1.0) -> None:
    store.server.kill()
    await asyncio.sleep(down_s)
    # From this thread, blocking the loop while it starts: a server started from a worker
    # thread gets SIGKILL when that thread ends (PR_SET_PDEATHSIG, tests/fixtures/procs.py).
    store.server.start()


@pytest.mark.slow
async def test_server_killed_mid_upload(blob_store: BlobStore) -> None:
    """The copy either resumes and delivers the file whole, or fails cleanly: no partial
    object either way."""
    data = os.urandom(SIZE)
    (blob_store.local / "big.bin").write_bytes(data)
    if isinstance(blob_store.server, AzuriteServer):
        # Azurite saves its metadata every few seconds: a graceful restart keeps the
        # container just created through the SIGKILL to come.
        blob_store.server.restart()
    copy = VfsHandle(blob_store.pool.get("l1")).copy_to("big.bin", blob_store.pool.get("obj"),
                                                       "", verify="sha256")
    task, _ = await run_until(blob_store, copy, 4 * MIB)
    try:
        await kill_and_restart(blob_store)
        done, _ = await asyncio.wait([task], timeout=90)
    finally:
        blob_store.server.start()
    assert done, "the copy neither finished nor failed after the restart"
    error = task.exception()
    if error is not None:
        assert isinstance(error, TransferError), error
        assert "vfs 'obj'" in str(error) or "vfs 'l1'" in str(error)
        assert await blob_store.names() == []
        return
    res = task.result()
    assert res.checksums["big.bin"] == hashlib.sha256(data).hexdigest()  # type: ignore[attr-defined]
    assert await blob_store.names() == [f"{PREFIX}big.bin"]
    async with blob_store.pool.get("obj").open_read("big.bin") as r:
        h = hashlib.sha256()
        while chunk := await r.read():
            h.update(chunk)
    assert h.hexdigest() == hashlib.sha256(data).hexdigest()


@pytest.mark.slow
async def test_server_killed_mid_download_resumes(blob_store: BlobStore, tmp_path: Path) -> None:
    """A read that loses its connection asks again from the last byte it got."""
    data = os.urandom(SIZE)
    obj = blob_store.pool.get("obj")
    async with obj.open_write("big.bin") as w:
        for i in range(0, SIZE, 4 * MIB):
            await w.write(data[i:i + 4 * MIB])
    if isinstance(blob_store.server, AzuriteServer):
        blob_store.server.restart()  # persist the blob (see above)
    copy = VfsHandle(obj).copy_to("big.bin", blob_store.pool.get("l1"), "down")
    task, _ = await run_until(blob_store, copy, 6 * MIB)
    try:
        await kill_and_restart(blob_store)
        res = await asyncio.wait_for(task, 90)
    finally:
        blob_store.server.start()
    assert res.files == 1  # type: ignore[attr-defined]
    got = (blob_store.local / "down" / "big.bin").read_bytes()
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()


async def test_azure_wrong_key_and_sas_are_refused_without_showing_them(azurite: AzuriteServer,
                                                                       tmp_path: Path) -> None:
    wrong_key = base64.b64encode(b"W" * 64).decode()
    bogus_sas = "sv=2024-11-04&ss=b&srt=sco&sp=rwdlac&se=2099-01-01T00:00:00Z&sig=QUJD"
    secrets = DictSecrets({"k": wrong_key, "sas": bogus_sas})
    entries = {"bad_key": azurite.vfs_options("anything", account_key_secret="k"),
               "bad_sas": azurite.vfs_options("anything", account_key_secret="",
                                              sas_secret="sas")}
    pool = make_pool(entries, secrets)
    try:
        for name, secret_key, secret in (("bad_key", "account_key_secret", "k"),
                                         ("bad_sas", "sas_secret", "sas")):
            with pytest.raises(TransferError) as ei:
                await pool.get(name).listdir("")
            msg = str(ei.value)
            assert f"vfs {name!r}" in msg and "authentication failed" in msg
            assert f"{secret_key} {secret!r}" in msg
            assert wrong_key not in msg and "QUJD" not in msg and "sig=" not in msg
    finally:
        await pool.aclose()


@pytest.mark.parametrize(("key", "value", "reason"), [
    ("account_key_secret", "not base64!", "is not a base64 storage account key"),
    ("sas_secret", "just some words", "is not a SAS token"),
    ("connection_string_secret", "garbage", "is not an Azure Storage connection string"),
])
async def test_azure_malformed_credentials_name_the_secret(azurite: AzuriteServer, key: str,
                                                           value: str, reason: str) -> None:
    opts = azurite.vfs_options("anything", account_key_secret="")
    opts[key] = "creds"
    if key == "connection_string_secret":
        opts["account_url"] = ""
    pool = make_pool({"blob": opts}, DictSecrets({"creds": value}))
    msg = str(await stat_error(pool, "blob", "x"))
    assert reason in msg and f"{key} 'creds'" in msg and "vfs 'blob'" in msg
    assert value not in msg


async def test_azure_missing_secret_is_named(azurite: AzuriteServer) -> None:
    pool = make_pool({"blob": azurite.vfs_options("anything")}, DictSecrets({}))
    await stat_error(pool, "blob", "x", match=r"vfs 'blob': account_key_secret: secret "
                                              r"'azurite-key' not found")


async def test_azure_sas_and_connection_string_work(azure_store: BlobStore) -> None:
    blob_store = azure_store
    from datetime import UTC, datetime, timedelta

    from azure.storage.blob import AccountSasPermissions, ResourceTypes, generate_account_sas

    server = blob_store.server
    assert isinstance(server, AzuriteServer)
    sas = generate_account_sas(server.account_name, server.account_key,
                               ResourceTypes(service=True, container=True, object=True),
                               AccountSasPermissions(read=True, write=True, delete=True,
                                                     list=True, add=True, create=True),
                               expiry=datetime.now(UTC) + timedelta(hours=1))
    secrets = DictSecrets({"sas": "?" + sas, "cs": server.connection_string})
    bucket = blob_store.buckets[0]
    entries = {"via_sas": server.vfs_options(bucket, account_key_secret="", sas_secret="sas"),
               "via_cs": server.vfs_options(bucket, account_key_secret="", account_url="",
                                            connection_string_secret="cs")}
    pool = make_pool(entries, secrets)
    try:
        (blob_store.local / "f.txt").write_bytes(b"hello")
        l1 = VfsHandle(blob_store.pool.get("l1"))
        res = await l1.copy_to("f.txt", pool.get("via_sas"), "a", verify="sha256")
        assert res.verified_by == {"a/f.txt": "server-md5"}
        # Copy Blob from a SAS-authorised source: the source URL carries the SAS.
        moved = await VfsHandle(pool.get("via_sas")).copy_to("a/f.txt", pool.get("via_cs"), "b")
        assert moved.server_side == 1
        assert {e.name for e in await pool.get("via_cs").listdir("")} == {"a", "b"}
    finally:
        await pool.aclose()


async def test_azure_rotated_key_is_picked_up_without_a_restart(azurite: AzuriteServer) -> None:
    secrets = DictSecrets({"k": base64.b64encode(b"W" * 64).decode()})
    pool = make_pool({"blob": azurite.vfs_options("rotation-test", account_key_secret="k")},
                     secrets)
    try:
        vfs = pool.get("blob")
        with pytest.raises(TransferError, match="authentication failed"):
            await vfs.listdir("")
        secrets.values["k"] = azurite.account_key
        with pytest.raises(TransferError, match="container 'rotation-test' does not exist"):
            await vfs.listdir("")  # authenticated now: the server answers about the container
    finally:
        await pool.aclose()


@pytest.mark.parametrize(("value", "reason"), [
    ('{"type": "service_account", "client_email": "a@b"', "is not JSON"),
    ('{"type": "authorized_user"}', "must be \"service_account\""),
])
async def test_gcs_malformed_credentials_name_the_secret(fake_gcs: object, value: str,
                                                         reason: str) -> None:
    """fake-gcs-server checks no credentials at all, so a *wrong* key cannot be tested against
    it (tests/vfs/test_gcs_auth.py exchanges one at a token endpoint of our own); a malformed
    one fails before any request."""
    opts = fake_gcs.vfs_options("anything")  # type: ignore[attr-defined]
    pool = make_pool({"g": opts}, DictSecrets({"gcs-sa-json": value}))
    msg = str(await stat_error(pool, "g", "x"))
    assert reason in msg and "credentials_secret 'gcs-sa-json'" in msg and "vfs 'g'" in msg
    assert "a@b" not in msg


async def test_gcs_missing_secret_is_named(fake_gcs: object) -> None:
    opts = fake_gcs.vfs_options("anything")  # type: ignore[attr-defined]
    pool = make_pool({"g": opts}, DictSecrets({}))
    await stat_error(pool, "g", "x", match=r"vfs 'g': credentials_secret: secret "
                                           r"'gcs-sa-json' not found")
