"""What only the S3 backend does, against SeaweedFS and rclone serve s3 (tests/fixtures/s3.py):
its config and errors, verification from the checksums the server checked, server-side copies
(CopyObject and UploadPartCopy), rclone-compatible mtime metadata, the part size, and the
memory an upload holds. What every backend does is tests/vfs/test_conformance.py, the copy
matrix and the failure tests."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from aftd.configmodel import Section
from aftd.errors import ConfigError, SecretError, TransferError
from aftd.vfs.base import VERIFIED_READ_BACK, VERIFIED_SERVER_SHA256, Vfs, read_back_sha256
from aftd.vfs.config import parse_vfs_section
from aftd.vfs.handle import VfsHandle
from aftd.vfs.s3_upload import part_size_for
from tests.fixtures.s3 import S3Server
from tests.vfs.backends import BackendTarget
from tests.vfs.conftest import DictSecrets, make_pool, target_of, target_vfs

MIB = 1 << 20
ROOT = Path(__file__).resolve().parents[2]
S3_BACKENDS = ["s3", "s3-rclone"]


def _entry(**over: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": "s3", "bucket": "landing", "access_key_secret": "ak",
                             "secret_key_secret": "sk"}
    entry.update(over)
    return entry


# -- config -----------------------------------------------------------------------------------

def test_the_documented_keys_load_with_their_defaults() -> None:
    cfg = parse_vfs_section(Section({"lake": _entry(
        prefix="inbound/", region="eu-west-1", endpoint="http://127.0.0.1:8333/",
        addressing="path", part_size_mib=32, max_parts_in_flight=8, storage_class="STANDARD_IA",
        sse="aws:kms")}, "aftd.toml", "vfs"))["lake"]
    assert (cfg.bucket, cfg.prefix, cfg.region, cfg.endpoint) == (
        "landing", "inbound/", "eu-west-1", "http://127.0.0.1:8333")
    assert (cfg.part_size_mib, cfg.max_parts_in_flight, cfg.storage_class, cfg.sse) == (
        32, 8, "STANDARD_IA", "aws:kms")
    plain = parse_vfs_section(Section({"lake": _entry()}, "f", "vfs"))["lake"]
    assert (plain.part_size_mib, plain.max_parts_in_flight, plain.sse, plain.prefix) == (
        16, 4, "", "")
    assert not plain.path_style  # AWS: virtual-hosted addressing
    on_server = parse_vfs_section(Section({"lake": _entry(endpoint="http://h:1")}, "f", "vfs"))
    assert on_server["lake"].path_style  # any other server: path style unless told


@pytest.mark.parametrize(("over", "key", "reason"), [
    ({"bucket": "Bad_Bucket"}, "bucket", "valid bucket name"),
    ({"prefix": "../up/"}, "prefix", ""),
    ({"endpoint": "ftp://host"}, "endpoint", "http"),
    ({"addressing": "dns"}, "addressing", ""),
    ({"part_size_mib": 4}, "part_size_mib", "5"),
    ({"max_parts_in_flight": 0}, "max_parts_in_flight", "1"),
    ({"sse": "aes"}, "sse", ""),
    ({"storage_class": "cold storage"}, "storage_class", ""),
    ({"root": "/x"}, "root", "prefix"),
    ({"access_key_secret": ""}, "access_key_secret", ""),
    ({"sse_kms_key_id": "k"}, "sse_kms_key_id", "aws:kms"),
])
def test_bad_keys_are_named(over: dict[str, Any], key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_vfs_section(Section({"lake": _entry(**over)}, "aftd.toml", "vfs"))
    assert err.value.key == f"vfs.lake.{key}"
    assert reason in err.value.reason
    assert str(err.value).startswith(f"aftd.toml: vfs.lake.{key}: ")


def test_a_missing_bucket_key_is_named() -> None:
    entry = _entry()
    del entry["bucket"]
    with pytest.raises(ConfigError, match=r"vfs\.lake\.bucket: is required"):
        parse_vfs_section(Section({"lake": entry}, "f", "vfs"))


def test_config_loads_without_aiobotocore_and_the_backend_names_what_to_install() -> None:
    code = ("import sys; sys.modules['aiobotocore'] = None; "
            "import aftd.vfs.s3_config, aftd.vfs.registry as r; "
            "assert 'botocore' not in sys.modules\n"
            "try:\n    r.load_backend('s3')\n"
            "except Exception as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "pip install 'aftd[s3]'" in out.stdout and "aiobotocore" in out.stdout


def test_part_size_grows_to_fit_10000_parts() -> None:
    assert part_size_for(None, 16) == part_size_for(10 * MIB, 16) == 16 * MIB
    huge = 1 << 41  # 2 TiB: 16 MiB parts would need 131,072 of them
    part = part_size_for(huge, 16)
    assert part % MIB == 0 and -(-huge // part) <= 10_000


# -- against the servers ----------------------------------------------------------------------

async def test_a_missing_secret_is_named(request: pytest.FixtureRequest) -> None:
    target = target_of(request, "s3")
    async with target_vfs(target, secrets={}) as vfs:
        with pytest.raises(SecretError) as err:
            await vfs.listdir("")
    assert "seaweedfs-access-key" in str(err.value)
    assert f"vfs.{vfs.name}.access_key_secret" in str(err.value)


async def _copy_up(tmp_path: Path, dst: Vfs, size: int, **kw: Any) -> tuple[Any, str]:
    data = os.urandom(size)
    (tmp_path / "up").mkdir(exist_ok=True)
    (tmp_path / "up" / "f.bin").write_bytes(data)
    os.utime(tmp_path / "up" / "f.bin", (1_650_000_000.5, 1_650_000_000.5))
    local = BackendTarget("local", {"type": "local", "root": str(tmp_path / "up")}, {})
    async with target_vfs(local, "up") as src:
        res = await VfsHandle(src).copy_to("f.bin", dst, "o", **kw)
    return res, hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("size", [300_000, 12 * MIB])  # one PutObject; a multipart upload
@pytest.mark.parametrize("backend", S3_BACKENDS)
async def test_verify_uses_the_servers_checksum_where_it_checked_one(
        request: pytest.FixtureRequest, tmp_path: Path, backend: str, size: int) -> None:
    """SeaweedFS checks x-amz-checksum-sha256 and echoes it: that is the verification. rclone
    serve s3 stores whatever it is sent without checking: the backend reads back instead."""
    target = target_of(request, backend)
    async with target_vfs(target) as dst:
        res, digest = await _copy_up(tmp_path, dst, size, verify="sha256")
        assert res.checksums == {"o/f.bin": digest}
        expected = VERIFIED_SERVER_SHA256 if backend == "s3" else VERIFIED_READ_BACK
        assert res.verified_by == {"o/f.bin": expected}
        assert await read_back_sha256(dst, "o/f.bin") == digest
        assert (await dst.stat("o/f.bin")).mtime == 1_650_000_000.5


def _head(server: S3Server, target: BackendTarget, rel: str) -> dict[str, Any]:
    client = server.sync_client()
    try:
        r: dict[str, Any] = client.head_object(Bucket=target.entry["bucket"],
                                               Key=target.entry["prefix"] + rel)
        return r
    finally:
        client.close()


@pytest.mark.parametrize("backend", S3_BACKENDS)
async def test_server_side_copies_keep_or_set_the_mtime(
        request: pytest.FixtureRequest, tmp_path: Path, backend: str) -> None:
    """Same server and account: CopyObject, or UploadPartCopy for objects above
    copy_cutoff_mib; no byte passes through aftd and the result says so (``server_side``)."""
    server: S3Server = request.getfixturevalue("seaweedfs" if backend == "s3" else "rclone_s3")
    target = target_of(request, backend)
    other = target_of(request, backend)
    small_cutoff = BackendTarget(other.id, {**other.entry, "copy_cutoff_mib": 5},
                                 other.secrets)
    async with target_vfs(target, "a") as a, target_vfs(small_cutoff, "b") as b:
        _, digest = await _copy_up(tmp_path, a, 12 * MIB)
        res = await VfsHandle(a).copy_to("o/f.bin", a, "whole", verify="sha256")
        assert (res.files, res.server_side, res.bytes) == (1, 1, 12 * MIB)  # CopyObject
        res = await VfsHandle(a).copy_to("o/f.bin", b, "copied", verify="sha256")
        # In 5 MiB parts: UploadPartCopy; rclone serve s3 cannot (it answers without an
        # ETag), and the copy is streamed instead.
        assert (res.files, res.server_side, res.bytes) == (1, int(backend == "s3"), 12 * MIB)
        assert res.checksums == {"copied/f.bin": digest}
        assert await read_back_sha256(b, "copied/f.bin") == digest
        assert (await b.stat("copied/f.bin")).mtime == 1_650_000_000.5
        if backend == "s3":  # (rclone serve s3 keeps the time as its file's, not as metadata)
            head = _head(server, small_cutoff, "copied/f.bin")
            assert head["Metadata"]["mtime"] == "1650000000.500000000"  # rclone's format
        await a.set_mtime("o/f.bin", 1_700_000_000.25)  # a copy onto itself, new metadata
        assert (await a.stat("o/f.bin")).mtime == 1_700_000_000.25
        assert await read_back_sha256(a, "o/f.bin") == digest


async def test_rclone_reads_the_mtime_aftd_stored(request: pytest.FixtureRequest,
                                                  tmp_path: Path) -> None:
    """rclone (the client) lists the object with the modification time aftd put in its
    metadata, so files moved by either tool keep their times for the other."""
    from tests.fixtures.procs import find_binary

    rclone = find_binary("rclone")
    if rclone is None:
        pytest.skip("no rclone binary")
    server: S3Server = request.getfixturevalue("seaweedfs")
    target = target_of(request, "s3")
    async with target_vfs(target) as dst:
        await _copy_up(tmp_path, dst, 1000)
    env = {**os.environ, "RCLONE_CONFIG_T_TYPE": "s3", "RCLONE_CONFIG_T_PROVIDER": "Other",
           "RCLONE_CONFIG_T_ENDPOINT": server.endpoint,
           "RCLONE_CONFIG_T_ACCESS_KEY_ID": server.access_key,
           "RCLONE_CONFIG_T_SECRET_ACCESS_KEY": server.secret_key,
           "RCLONE_CONFIG_T_FORCE_PATH_STYLE": "true"}
    out = subprocess.run(
        [rclone, "lsl", "--config", "/dev/null",
         f"t:{target.entry['bucket']}/{target.entry['prefix']}o"],
        env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert " 2022-04-15 05:20:00.500000000 f.bin" in out.stdout, out.stdout


async def _upload_peak(dst: Vfs, mib: int, chunk: bytes) -> int:
    """What Python allocated at its peak while streaming ``mib`` MiB into one object."""
    tracemalloc.start()
    try:
        async with dst.open_write(f"stream-{mib}.bin", size=mib * MIB) as w:
            for _ in range(mib):
                await w.write(chunk)
            await w.finish(None)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


async def test_an_upload_holds_a_few_parts_whatever_the_file_size(
        request: pytest.FixtureRequest) -> None:
    """5 MiB parts, 2 in flight: the peak is the parts in flight and the one being filled
    (about 17 MiB traced; 26 MiB when the socket's buffer held a copy of each part in flight),
    the same for 20 MiB as for 60 MiB."""
    target = target_of(request, "s3")
    entry = {**target.entry, "part_size_mib": 5, "max_parts_in_flight": 2}
    chunk = os.urandom(MIB)
    async with target_vfs(BackendTarget(target.id, entry, target.secrets)) as dst:
        await _upload_peak(dst, 6, chunk)  # connections and imports are made before measuring
        small = await _upload_peak(dst, 20, chunk)
        large = await _upload_peak(dst, 60, chunk)
        assert (await dst.stat("stream-60.bin")).size == 60 * MIB
    assert large < small + 6 * MIB, (small / MIB, large / MIB)
    assert large < 4 * 5 * MIB, f"peak {large / MIB:.1f} MiB for a 60 MiB upload"


async def test_storage_class_and_encryption_reach_the_server(
        request: pytest.FixtureRequest, seaweedfs: S3Server) -> None:
    target = target_of(request, "s3")
    entry = {**target.entry, "storage_class": "STANDARD", "sse": "AES256"}
    async with target_vfs(BackendTarget(target.id, entry, target.secrets)) as dst, \
            dst.open_write("enc.bin") as w:
        await w.write(b"x" * 1000)
    head = _head(seaweedfs, target, "enc.bin")
    assert head.get("ServerSideEncryption") == "AES256", head


async def test_an_object_cannot_be_appended_to(request: pytest.FixtureRequest) -> None:
    async with target_vfs(target_of(request, "s3")) as vfs:
        with pytest.raises(TransferError, match="cannot be appended"):
            async with vfs.open_write("x", 10) as w:
                await w.write(b"x")


async def test_scandir_holds_one_page_of_a_listing(request: pytest.FixtureRequest,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A walk of a big prefix reads it a page at a time: the first entries come after one
    ListObjectsV2 request, the next page is asked for only when they are used up."""
    import aftd.vfs.s3 as s3mod

    monkeypatch.setattr(s3mod, "_PAGE", 10)
    async with target_vfs(target_of(request, "s3")) as vfs:
        for i in range(25):
            async with vfs.open_write(f"many/f{i:02d}") as w:
                await w.write(b"x")
        calls: list[str] = []
        real_call = vfs.call  # type: ignore[attr-defined]

        async def counting(rel: str, op: str, **kw: Any) -> Any:
            calls.append(op)
            return await real_call(rel, op, **kw)

        monkeypatch.setattr(vfs, "call", counting)
        entries = vfs.scandir("many")
        first = await anext(entries)
        assert (first.path, calls.count("list_objects_v2")) == ("many/f00", 1)
        rest = [e.path async for e in entries]
        assert rest == [f"many/f{i:02d}" for i in range(1, 25)]
        assert calls.count("list_objects_v2") == 3


async def test_a_large_download_over_https_runs_as_presigned_ranged_gets(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """To local disk a large object is fetched by presigned ranged GETs on threads
    (aftd/vfs/objget.py), here over https with the endpoint's certificate trusted through
    ``ca_file``, from ``rclone serve s3`` (which answers ranges with 200 and a
    Content-Range); never through the SDK's streaming body."""
    from aftd.vfs.s3 import S3Vfs
    from tests.fixtures.s3 import start_rclone_s3
    from tests.fixtures.tlscert import make_cert

    server = start_rclone_s3(tmp_path / "rclone", tls=make_cert(tmp_path / "tls"))
    try:
        server.create_bucket("tlsbucket")
        local = tmp_path / "l"
        local.mkdir()
        data = os.urandom(20 * MIB + 4321)
        (local / "big.bin").write_bytes(data)
        os.utime(local / "big.bin", (1_600_000_000, 1_600_000_000))
        pool = make_pool({"l": {"type": "local", "root": str(local)},
                          "s": server.vfs_options("tlsbucket", streams_min_size=16 * MIB)},
                         DictSecrets(server.secrets))
        try:
            await VfsHandle(pool.get("l")).copy_to("big.bin", pool.get("s"), "")

            def no_stream(*a: object, **k: object) -> None:
                raise AssertionError("the download went through the streaming reader")

            monkeypatch.setattr(S3Vfs, "open_read_range", no_stream)
            with capture_logs() as logs:
                res = await VfsHandle(pool.get("s")).copy_to("big.bin", pool.get("l"), "d")
            assert res.bytes == len(data)
            assert (local / "d" / "big.bin").read_bytes() == data
            assert [e["streams"] for e in logs if e["event"] == "copy_ranged"] == [4]
            assert not [e for e in logs if e["event"] in ("s3_read_resume", "copy_retry")]
        finally:
            await pool.aclose()
    finally:
        server.stop()
