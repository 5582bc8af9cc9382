"""What the S3 streams need of their VFS (:class:`~aftd.vfs.s3.S3Vfs`), as a protocol, so the
upload, download and copy modules depend on this and not on the backend module that uses them;
and the multipart uploads whose abort failed (:class:`Orphans`), kept by the VFS."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from aftd.errors import TransferError
from aftd.vfs.s3_config import S3VfsConfig

__all__ = ["Orphans", "S3Ops"]

log = structlog.get_logger(__name__)


@dataclass
class Orphans:
    """Multipart uploads whose abort failed; aborted before the next upload starts."""

    pending: set[tuple[str, str]] = field(default_factory=set)  # (key, upload id)

    async def retry(self, abort: Callable[[str, str], Any]) -> None:
        for key, upload_id in list(self.pending):
            try:
                await abort(key, upload_id)
            except TransferError:
                continue
            self.pending.discard((key, upload_id))
            log.info("s3_orphan_upload_aborted", key=key)


class S3Ops(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def bucket(self) -> str: ...
    @property
    def cfg(self) -> S3VfsConfig: ...
    @property
    def orphans(self) -> Orphans: ...

    async def call(self, rel: str, op: str, *, allow: frozenset[str] = frozenset(),
                   **kw: Any) -> Any:
        """One S3 request (errors translated; codes in ``allow`` raised as ``S3Code``)."""

    def put_args(self) -> dict[str, Any]:
        """Storage class and encryption for a new object."""

    async def abort_upload(self, key: str, upload_id: str, *, quiet: bool = False) -> None:
        """Abort a multipart upload (``quiet``: remember it when the server is unreachable)."""
