"""Streaming uploads to S3: one PutObject for a small file, else a multipart upload.

Bytes are gathered into parts of ``part_size_mib`` (raised when the file's announced size would
need more than 10,000 parts); up to ``max_parts_in_flight`` parts are sent at once, so memory per
upload stays near (``max_parts_in_flight`` + 1) parts whatever the file's size. The multipart
upload is created when the first part is full, with the object's metadata (``mtime``), storage
class and encryption; a file that ends before that goes in one PutObject. Nothing is visible
until CompleteMultipartUpload. A failure or a cancel aborts the upload; when even the abort
fails (the server is gone), the upload is remembered and aborted later
(:class:`~aftd.vfs.s3_ops.Orphans`).

With ``verify``, every request carries ``x-amz-checksum-sha256`` of its bytes (hashed on a
``file_io`` thread): a server that supports additional checksums refuses bytes that do not match
and echoes the value, and CompleteMultipartUpload returns the composite checksum (SHA-256 of
the parts' digests, ``-N``). The :class:`S3Receipt` keeps what was sent and what came back for
:meth:`~aftd.vfs.s3.S3Vfs.verify_stored`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
from dataclasses import dataclass
from typing import Any

import structlog

from aftd import executors
from aftd.errors import TransferError
from aftd.vfs.base import TransientError, fail, mismatch
from aftd.vfs.objkeys import MTIME_KEY, mtime_meta
from aftd.vfs.s3_client import S3Code
from aftd.vfs.s3_config import MAX_PARTS
from aftd.vfs.s3_ops import S3Ops

__all__ = ["S3Receipt", "S3Upload", "part_size_for"]

log = structlog.get_logger(__name__)
MIB = 1 << 20
# Our retries of one part, after botocore's own (which cover dropped connections and 5xx).
PART_RETRY_DELAYS = (1.0, 2.0, 4.0)
_ABORT_TRIES = 3
_LOST = frozenset({"NoSuchUpload"})


class _UploadLost(TransientError):
    """Retrying the part cannot help; the copy engine retries the whole file."""


def part_size_for(size: int | None, part_size_mib: int) -> int:
    """The part size: the configured one, raised to fit a known size into 10,000 parts."""
    part = part_size_mib * MIB
    if size is not None and size > part * MAX_PARTS:
        part = -(-size // MAX_PARTS // MIB) * MIB + MIB
    return part


def sha256_of(body: io.BytesIO) -> bytes:
    with body.getbuffer() as view:  # no copy of the part
        return hashlib.sha256(view).digest()


def _size(body: io.BytesIO) -> int:
    with body.getbuffer() as view:
        return view.nbytes


def b64sha256(body: io.BytesIO) -> str:
    return base64.b64encode(sha256_of(body)).decode()


def composite(part_checksums: list[str]) -> str:
    """S3's composite checksum of a multipart upload: SHA-256 over the parts' digests, ``-N``."""
    digest = hashlib.sha256(b"".join(base64.b64decode(c) for c in part_checksums)).digest()
    return f"{base64.b64encode(digest).decode()}-{len(part_checksums)}"


@dataclass(frozen=True)
class S3Receipt:
    """What a verified upload sent and what the server answered: ``sent`` is the base64
    SHA-256 of a one-request upload or the composite of a multipart one, ``echoed`` the
    server's answer (None: it said nothing), ``whole`` the hex SHA-256 of a one-request body."""

    sent: str
    echoed: str | None
    whole: str | None = None


@dataclass
class _Part:
    number: int
    etag: str
    checksum: str  # "" unless verifying
    size: int


class S3Upload:
    """One upload; the writer the copy engine streams into (``open_write``)."""

    def __init__(self, vfs: S3Ops, rel: str, key: str, *, mtime: float | None,
                 size: int | None, verify: bool) -> None:
        self.vfs, self.rel, self.key = vfs, rel, key
        self.mtime, self.verify = mtime, verify
        self.part_size = part_size_for(size, vfs.cfg.part_size_mib)
        self.multipart = size is None or size > self.part_size
        self.in_flight = vfs.cfg.max_parts_in_flight
        self.part: io.BytesIO | None = None  # the part being filled
        self.spare: list[io.BytesIO] = []  # buffers of parts the server has, to fill again
        self.bodies: dict[int, io.BytesIO] = {}  # of the parts in flight
        self.buffered = 0
        self.upload_id: str | None = None
        self.tasks: dict[int, asyncio.Task[_Part]] = {}
        self.parts: dict[int, _Part] = {}
        self.next_number = 1
        self._confirmed = 0
        self._through = 0  # parts 1.._through are done
        self.receipt: S3Receipt | None = None
        self.finished = False

    @property
    def confirmed(self) -> int:
        """Bytes of the parts the server has, without holes (nothing resumes from it: an
        unfinished upload is aborted, and a retry starts a new one)."""
        return self._confirmed

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            take = min(len(view), self.part_size - self.buffered)
            if self.part is None:
                self.part = self._blank()
            self.part.write(view[:take])
            self.buffered += take
            view = view[take:]
            if self.buffered == self.part_size:
                await self._ship(self._take())

    async def flush(self) -> None:
        """Wait for the parts in flight (bytes short of a part are sent by ``finish``)."""
        while self.tasks:
            await self._settle()

    async def finish(self, mtime: float | None) -> int:
        """Send what is left and publish the object (its mtime was set when it started)."""
        if self.upload_id is None:
            size = await self._put_whole(self._take())
        else:
            if self.buffered:
                await self._ship(self._take())
            await self.flush()
            size = await self._complete()
        self.finished = True
        return size

    async def abort(self) -> None:
        """Cancel the parts in flight and abort the multipart upload (shielded from a cancel,
        so a cancelled copy still leaves nothing behind)."""
        tasks = list(self.tasks.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.tasks.clear()
        if self.upload_id is not None:
            await asyncio.shield(self._abort_or_remember(self.upload_id))

    # -- internals -------------------------------------------------------------------------
    def _blank(self) -> io.BytesIO:
        """A buffer for the next part: one whose part the server has (written over in place),
        else, for a multipart upload, a new one of exactly a part's size (one allocation, no
        growth). Reusing the same (in flight + 1) buffers keeps the allocator from handing the
        memory of part after part to fragments: peak RSS stays flat with the file's size."""
        if self.spare:
            body = self.spare.pop()
            body.seek(0)
            return body
        body = io.BytesIO()
        if self.multipart:
            body.seek(self.part_size - 1)
            body.write(b"\0")
            body.seek(0)
        return body

    def _take(self) -> io.BytesIO:
        """The part filled so far, from its start. A part is sent as a file object rather than
        bytes: aiohttp then writes it 64 KiB at a time, waiting for the socket to drain, where
        one bytes body is handed to the transport whole and copied into its send buffer (a
        second copy of every part in flight). The writes above copy each chunk into the part
        at once, so the caller's chunks are not kept either."""
        body, self.part, filled = self.part or io.BytesIO(), None, self.buffered
        self.buffered = 0
        if _size(body) != filled:  # the last part, in a buffer made for a whole one
            body.truncate(filled)
        body.seek(0)
        return body

    def _object_args(self) -> dict[str, Any]:
        args = self.vfs.put_args()
        if self.mtime is not None:
            args["Metadata"] = {MTIME_KEY: mtime_meta(self.mtime)}
        return args

    async def _put_whole(self, body: io.BytesIO) -> int:
        args = self._object_args()
        whole = ""
        size = _size(body)
        if self.verify:
            digest = await executors.run(executors.FILE_IO, sha256_of, body)
            args["ChecksumSHA256"] = base64.b64encode(digest).decode()
            whole = digest.hex()
        r = await self.vfs.call(self.rel, "put_object", Bucket=self.vfs.bucket, Key=self.key,
                                Body=body, ContentLength=size, **args)
        if self.verify:
            self.receipt = S3Receipt(args["ChecksumSHA256"], r.get("ChecksumSHA256"), whole)
        self._confirmed = size
        return size

    async def _ship(self, body: io.BytesIO) -> None:
        if self.upload_id is None:
            await self._create()
        while len(self.tasks) >= self.in_flight:
            await self._settle()
        number = self.next_number
        if number > MAX_PARTS:
            raise fail(TransferError, self.vfs.name, self.rel, (
                f"more than {MAX_PARTS} parts of {self.part_size // MIB} MiB: raise "
                f"vfs.{self.vfs.name}.part_size_mib"))
        self.next_number += 1
        self.bodies[number] = body
        self.tasks[number] = asyncio.create_task(self._send_part(number, body))

    async def _create(self) -> None:
        await self.vfs.orphans.retry(self.vfs.abort_upload)
        args = self._object_args()
        if self.verify:
            args["ChecksumAlgorithm"] = "SHA256"
        r = await self.vfs.call(self.rel, "create_multipart_upload", Bucket=self.vfs.bucket,
                                Key=self.key, **args)
        self.upload_id = str(r["UploadId"])

    async def _settle(self) -> None:
        """Wait for the first part in flight to end; raise its error."""
        done, _ = await asyncio.wait(self.tasks.values(), return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            part = t.result()  # raises the part's error (the caller aborts the upload)
            del self.tasks[part.number]
            body = self.bodies.pop(part.number)
            if _size(body) == self.part_size:
                self.spare.append(body)
            self.parts[part.number] = part
        while self._through + 1 in self.parts:
            self._through += 1
            self._confirmed += self.parts[self._through].size

    async def _send_part(self, number: int, body: io.BytesIO) -> _Part:
        checksum = ""
        if self.verify:
            checksum = await executors.run(executors.FILE_IO, b64sha256, body)
        for delay in (*PART_RETRY_DELAYS, None):
            try:
                return await self._upload_part(number, body, checksum)
            except TransientError as exc:
                if delay is None or isinstance(exc, _UploadLost):
                    raise
                log.warning("s3_part_retry", vfs=self.vfs.name, path=self.rel, part=number,
                            error=str(exc), delay_s=delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _upload_part(self, number: int, body: io.BytesIO, checksum: str) -> _Part:
        extra = {"ChecksumSHA256": checksum} if checksum else {}
        size = _size(body)
        body.seek(0)  # a retry sends the part again from its start
        try:
            r = await self.vfs.call(self.rel, "upload_part", allow=_LOST, Bucket=self.vfs.bucket,
                                    Key=self.key, UploadId=self.upload_id, PartNumber=number,
                                    Body=body, ContentLength=size, **extra)
        except S3Code:  # e.g. the server restarted and forgot it: only a new upload can help
            raise fail(_UploadLost, self.vfs.name, self.rel,
                       "the server lost the multipart upload (NoSuchUpload)") from None
        echoed = r.get("ChecksumSHA256")
        if checksum and echoed and echoed != checksum:
            raise mismatch(self.vfs.name, self.rel, checksum, str(echoed))
        return _Part(number, str(r["ETag"]), checksum, size)

    async def _complete(self) -> int:
        parts = [self.parts[n] for n in sorted(self.parts)]
        listed = [{"PartNumber": p.number, "ETag": p.etag,
                   **({"ChecksumSHA256": p.checksum} if p.checksum else {})} for p in parts]
        r = await self.vfs.call(self.rel, "complete_multipart_upload", Bucket=self.vfs.bucket,
                                Key=self.key, UploadId=self.upload_id,
                                MultipartUpload={"Parts": listed})
        self.upload_id = None  # completed: nothing left to abort
        if self.verify:
            self.receipt = S3Receipt(composite([p.checksum for p in parts]),
                                     r.get("ChecksumSHA256"))
        head = await self.vfs.call(self.rel, "head_object", Bucket=self.vfs.bucket,
                                   Key=self.key)
        return int(head["ContentLength"])

    async def _abort_or_remember(self, upload_id: str) -> None:
        for attempt in range(_ABORT_TRIES):
            try:
                await self.vfs.abort_upload(self.key, upload_id)
                return
            except TransferError as exc:
                if attempt + 1 == _ABORT_TRIES:
                    self.vfs.orphans.pending.add((self.key, upload_id))
                    log.warning("s3_abort_failed", vfs=self.vfs.name, path=self.rel,
                                error=str(exc), retry="before the next upload")
                    return
                await asyncio.sleep(0.5 * (attempt + 1))
