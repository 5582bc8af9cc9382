"""S3 servers (SeaweedFS, rclone serve s3) driven by aiobotocore: the operations an S3 backend
needs, and the checksum behaviour that differs between them (see tests/fixtures/s3.py)."""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiobotocore.session import get_session
from botocore.exceptions import ClientError, EndpointConnectionError

from tests.fixtures.s3 import S3Server

MIB = 1024 * 1024
PARTS = [b"a" * (5 * MIB), b"b" * (5 * MIB), b"tail" * 1000]  # S3's minimum part is 5 MiB


def b64sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


@pytest.fixture
async def s3(s3_server: S3Server) -> AsyncIterator[Any]:
    async with get_session().create_client("s3", **s3_server.client_kwargs()) as client:
        yield client


@pytest.fixture
async def bucket(s3: Any) -> str:
    name = f"t-{uuid.uuid4().hex[:20]}"
    await s3.create_bucket(Bucket=name)
    return name


async def _multipart(s3: Any, bucket: str, key: str, parts: list[bytes],
                     **create: Any) -> dict[str, Any]:
    upload = await s3.create_multipart_upload(Bucket=bucket, Key=key, **create)
    done = []
    for number, body in enumerate(parts, 1):
        extra = {"ChecksumAlgorithm": create["ChecksumAlgorithm"]} if create else {}
        r = await s3.upload_part(Bucket=bucket, Key=key, UploadId=upload["UploadId"],
                                 PartNumber=number, Body=body, **extra)
        part = {"ETag": r["ETag"], "PartNumber": number}
        if r.get("ChecksumSHA256"):
            part["ChecksumSHA256"] = r["ChecksumSHA256"]
        done.append(part)
    result: dict[str, Any] = await s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload["UploadId"], MultipartUpload={"Parts": done})
    return result


async def test_wrong_secret_key_is_refused(s3_server: S3Server) -> None:
    kw = s3_server.client_kwargs() | {"aws_secret_access_key": "not-the-secret"}
    async with get_session().create_client("s3", **kw) as bad:
        with pytest.raises(ClientError) as info:
            await bad.list_buckets()
    assert info.value.response["Error"]["Code"] in {"SignatureDoesNotMatch", "AccessDenied",
                                                    "InvalidAccessKeyId"}


async def test_multipart_ranged_get_list_and_copy(s3: Any, bucket: str) -> None:
    data = b"".join(PARTS)
    done = await _multipart(s3, bucket, "dir/big.bin", PARTS)
    assert done["ETag"].strip('"').endswith("-3")
    r = await s3.get_object(Bucket=bucket, Key="dir/big.bin", Range=f"bytes={5 * MIB - 10}-{5 * MIB + 9}")
    assert await r["Body"].read() == data[5 * MIB - 10:5 * MIB + 10]
    assert r["ContentRange"] == f"bytes {5 * MIB - 10}-{5 * MIB + 9}/{len(data)}"

    await s3.put_object(Bucket=bucket, Key="dir/sub/x.txt", Body=b"x")
    await s3.put_object(Bucket=bucket, Key="top.txt", Body=b"t")
    root = await s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [o["Key"] for o in root["Contents"]] == ["top.txt"]
    assert [p["Prefix"] for p in root["CommonPrefixes"]] == ["dir/"]
    sub = await s3.list_objects_v2(Bucket=bucket, Prefix="dir/", Delimiter="/")
    assert [o["Key"] for o in sub["Contents"]] == ["dir/big.bin"]
    assert [p["Prefix"] for p in sub["CommonPrefixes"]] == ["dir/sub/"]

    await s3.copy_object(Bucket=bucket, Key="copy.bin",
                         CopySource={"Bucket": bucket, "Key": "dir/big.bin"},
                         MetadataDirective="REPLACE", Metadata={"mtime": "1700000000.5"})
    head = await s3.head_object(Bucket=bucket, Key="copy.bin")
    assert head["ContentLength"] == len(data)
    assert head["Metadata"] == {"mtime": "1700000000.5"}
    copied = await s3.get_object(Bucket=bucket, Key="copy.bin")
    assert hashlib.sha256(await copied["Body"].read()).digest() == hashlib.sha256(data).digest()


async def test_aborted_multipart_upload_is_listed_then_gone(s3: Any, bucket: str) -> None:
    upload = await s3.create_multipart_upload(Bucket=bucket, Key="aborted.bin")
    await s3.upload_part(Bucket=bucket, Key="aborted.bin", UploadId=upload["UploadId"],
                         PartNumber=1, Body=b"z" * 1000)
    pending = await s3.list_multipart_uploads(Bucket=bucket)
    assert [(u["Key"], u["UploadId"]) for u in pending["Uploads"]] == [
        ("aborted.bin", upload["UploadId"])]
    await s3.abort_multipart_upload(Bucket=bucket, Key="aborted.bin", UploadId=upload["UploadId"])
    assert (await s3.list_multipart_uploads(Bucket=bucket)).get("Uploads", []) == []
    with pytest.raises(ClientError):
        await s3.head_object(Bucket=bucket, Key="aborted.bin")
    assert (await s3.list_objects_v2(Bucket=bucket)).get("Contents", []) == []


async def test_sha256_checksum_on_put(s3_server: S3Server, s3: Any, bucket: str) -> None:
    body = b"checked by the server?"
    r = await s3.put_object(Bucket=bucket, Key="ck.txt", Body=body, ChecksumAlgorithm="SHA256")
    head = await s3.head_object(Bucket=bucket, Key="ck.txt", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == b64sha256(body)
    wrong = base64.b64encode(b"\0" * 32).decode()
    if s3_server.verifies_checksums:
        assert r["ChecksumSHA256"] == b64sha256(body)
        with pytest.raises(ClientError) as info:
            await s3.put_object(Bucket=bucket, Key="bad.txt", Body=body, ChecksumSHA256=wrong)
        assert info.value.response["Error"]["Code"] in {"BadDigest", "XAmzContentChecksumMismatch",
                                                        "InvalidRequest"}
    else:
        # rclone stores whatever the client claims and does not echo it: no proof of anything.
        assert "ChecksumSHA256" not in r
        await s3.put_object(Bucket=bucket, Key="bad.txt", Body=body, ChecksumSHA256=wrong)
        head = await s3.head_object(Bucket=bucket, Key="bad.txt", ChecksumMode="ENABLED")
        assert head["ChecksumSHA256"] == wrong


async def test_sha256_checksum_on_multipart(s3_server: S3Server, s3: Any, bucket: str) -> None:
    done = await _multipart(s3, bucket, "mp.bin", PARTS, ChecksumAlgorithm="SHA256")
    head = await s3.head_object(Bucket=bucket, Key="mp.bin", ChecksumMode="ENABLED")
    if s3_server.verifies_checksums:
        composite = hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in PARTS)).digest()
        expected = f"{base64.b64encode(composite).decode()}-{len(PARTS)}"
        assert done["ChecksumSHA256"] == expected
        assert head["ChecksumSHA256"] == expected
        assert head.get("ChecksumType") == "COMPOSITE"
    else:
        assert "ChecksumSHA256" not in done
        assert "ChecksumSHA256" not in head
    assert head["ContentLength"] == sum(map(len, PARTS))


async def test_killed_server_restarts_with_its_objects(s3_server: S3Server) -> None:
    bucket = f"t-{uuid.uuid4().hex[:20]}"
    s3_server.create_bucket(bucket)
    client = s3_server.sync_client()
    try:
        client.put_object(Bucket=bucket, Key="survivor.txt", Body=b"still here")
        s3_server.kill()
        with pytest.raises(EndpointConnectionError):
            client.list_buckets()
        s3_server.start()
        assert client.get_object(Bucket=bucket, Key="survivor.txt")["Body"].read() == b"still here"
    finally:
        client.close()
        s3_server.start()  # whatever happened, leave the session's server running
