"""The aiobotocore client of one ``s3`` VFS, and the errors a script sees for what S3 answers.

The client is created on first use, with the access key and secret key resolved through the
secret chain then ("connect time"), and shared by every job using the VFS (its HTTP connection
pool is bounded by ``max_connections``). After an authentication failure it is dropped, so the
next operation resolves the secrets again and a rotated key is picked up without a restart.

botocore computes CRC checksums of every upload by default since 1.36; we ask for checksums
only when a copy is verified (``request_checksum_calculation = "when_required"``), and then
send SHA-256 ourselves (:mod:`aftd.vfs.s3_upload`). Retries of throttling, 5xx and dropped
connections are botocore's "standard" mode; what is still failing after them is a
:class:`TransientError` the copy engine retries with its own backoff.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import botocore.exceptions as bexc
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from aftd.errors import TransferError
from aftd.secrets.base import SecretResolver
from aftd.vfs.base import PathNotFoundError, TransientError, fail
from aftd.vfs.s3_config import S3VfsConfig

__all__ = ["AUTH_CODES", "ERRORS", "S3Client", "S3Code", "error_code", "translate"]

AUTH_CODES = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied",
                        "InvalidToken", "ExpiredToken", "AuthorizationHeaderMalformed",
                        "InvalidSecurity", "403"})
_NOT_FOUND = frozenset({"NoSuchKey", "404", "NotFound"})
# Worth another attempt: the server is busy or restarting, or lost an in-flight upload.
_TRANSIENT_CODES = frozenset({"InternalError", "ServiceUnavailable", "SlowDown", "503", "500",
                              "502", "504", "RequestTimeout", "RequestTimeTooSkewed",
                              "NoSuchUpload", "BadDigest", "XAmzContentChecksumMismatch",
                              "IncompleteBody", "OperationAborted"})
_CONNECTION = (bexc.HTTPClientError, bexc.ConnectionError, bexc.ResponseStreamingError,
               bexc.IncompleteReadError, aiohttp.ClientError, OSError, asyncio.TimeoutError)
_ATTEMPTS = 5  # botocore's, per request (standard mode: exponential backoff with jitter)
ERRORS = (bexc.ClientError, bexc.BotoCoreError, aiohttp.ClientError, OSError,
          asyncio.TimeoutError)


class S3Code(Exception):
    """An error code the caller asked to handle itself (``S3Vfs.call(allow=...)``)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def error_code(exc: BaseException) -> str:
    """The S3 error code of a ClientError ("" for anything else)."""
    if isinstance(exc, bexc.ClientError):
        err = exc.response.get("Error", {})
        return str(err.get("Code") or exc.response.get("ResponseMetadata", {}).get(
            "HTTPStatusCode", ""))
    return ""


class S3Client:
    """Creates the client lazily; :meth:`drop` forgets it (the next :meth:`get` reconnects)."""

    def __init__(self, cfg: S3VfsConfig, secrets: SecretResolver) -> None:
        self.cfg = cfg
        self.secrets = secrets
        self._client: Any = None
        self._stack: AsyncExitStack | None = None
        self._lock = asyncio.Lock()
        self.access_key_id = ""  # known once connected (same-account checks use it)
        self._secret_values: tuple[str, ...] = ()
        self.bucket_checked = False  # the bucket was found since the client connected

    @property
    def where(self) -> str:
        return self.cfg.endpoint or f"AWS S3 ({self.cfg.region})"

    async def get(self) -> Any:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                await self._connect()
        return self._client

    async def _connect(self) -> None:
        ak = await self.secrets.get(self.cfg.access_key_secret)
        sk = await self.secrets.get(self.cfg.secret_key_secret)
        config = AioConfig(
            s3={"addressing_style": "path" if self.cfg.path_style else "virtual"},
            retries={"mode": "standard", "max_attempts": _ATTEMPTS},
            max_pool_connections=self.cfg.max_connections,
            connect_timeout=self.cfg.connect_timeout_s, read_timeout=self.cfg.read_timeout_s,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            signature_version="s3v4", user_agent_extra="aftd")
        stack = AsyncExitStack()
        self._client = await stack.enter_async_context(get_session().create_client(
            "s3", region_name=self.cfg.region, endpoint_url=self.cfg.endpoint or None,
            aws_access_key_id=ak, aws_secret_access_key=sk, config=config,
            verify=self.cfg.ca_file or None))
        self._stack = stack
        self.access_key_id = ak
        self._secret_values = (ak, sk)

    def scrub(self, text: str) -> str:
        """``text`` without the credentials (a server's error text may quote the key id)."""
        for value in self._secret_values:
            if value:
                text = text.replace(value, "***")
        return text

    async def drop(self) -> None:
        """Forget the client: the next use resolves the secrets and connects again."""
        stack, self._stack, self._client = self._stack, None, None
        self.bucket_checked = False
        if stack is not None:
            await stack.aclose()

    async def aclose(self) -> None:
        await self.drop()


def translate(client: S3Client, vfs: str, rel: str, exc: BaseException) -> TransferError:
    """The error a script sees for what aiobotocore raised (names the VFS, the path and, for
    configuration problems, the config key; never a credential)."""
    key = f"vfs.{vfs}"
    code = error_code(exc)
    if isinstance(exc, bexc.ClientError):
        message = client.scrub(str(exc.response.get("Error", {}).get("Message") or code))
        if code == "NoSuchBucket":
            return fail(TransferError, vfs, rel, f"bucket {client.cfg.bucket!r} does not exist "
                        f"on {client.where} ({key}.bucket)")
        if code in AUTH_CODES:
            return fail(TransferError, vfs, rel, f"{client.where} refused the credentials "
                        f"({code}): check the secrets named by {key}.access_key_secret and "
                        f"{key}.secret_key_secret, and the bucket's permissions")
        if code in _NOT_FOUND:
            return fail(PathNotFoundError, vfs, rel, "no such file or directory")
        if code in _TRANSIENT_CODES:
            return fail(TransientError, vfs, rel, f"{client.where}: {code}: {message}")
        return fail(TransferError, vfs, rel, f"{client.where}: {code}: {message}")
    if isinstance(exc, _CONNECTION):
        reason = client.scrub(str(exc) or type(exc).__name__)
        return fail(TransientError, vfs, rel, f"cannot reach {client.where} ({key}.endpoint): "
                    f"{reason}")
    return fail(TransferError, vfs, rel, client.scrub(f"{type(exc).__name__}: {exc}"))
