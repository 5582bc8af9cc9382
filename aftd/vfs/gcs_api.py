"""The Google Cloud Storage JSON API calls the ``gcs`` backend makes, over one aiohttp session.

Our own requests rather than gcloud-aio-storage: its ``upload()`` sends a whole file in one
request (it needs the body up front), and streaming with bounded memory needs chunked resumable
uploads, which it does not offer. Having every call here keeps authentication, retries and the
translation of HTTP statuses into aftd's errors in one place.

Errors name the VFS and the path, never a token: 404 → :class:`PathNotFoundError` (the caller
tells an unknown bucket apart), 412 → :class:`PathExistsError`, 401/403 → a credentials error,
429/5xx and dropped connections → :class:`TransientError` once ``retries`` retries with backoff
failed.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp

from aftd.errors import TransferError
from aftd.vfs.base import PathExistsError, PathNotFoundError, TransientError, fail
from aftd.vfs.gcs_auth import TokenSource

__all__ = ["CONNECT_ERRORS", "GOOGLE", "RETRY_STATUSES", "GcsApi", "GcsOptions", "backoff",
           "body_of", "reason"]

T = TypeVar("T")
GOOGLE = "https://storage.googleapis.com"
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
CONNECT_ERRORS = (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError,
                   aiohttp.ClientOSError, aiohttp.ClientPayloadError, ConnectionError,
                   TimeoutError)


@dataclass(frozen=True)
class GcsOptions:
    vfs: str
    bucket: str
    endpoint: str  # "" = Google
    connect_timeout_s: float = 15.0
    read_timeout_s: float = 120.0
    retries: int = 3

    @property
    def base(self) -> str:
        return self.endpoint or GOOGLE

    @property
    def emulator(self) -> bool:
        """An emulator endpoint: sent no token (fake-gcs-server checks none), and its upload
        sessions are never status-queried (fake-gcs-server finalises the object on one)."""
        return bool(self.endpoint)


def backoff(attempt: int) -> float:
    """Seconds to wait before retry ``attempt`` (1-based): 0.5, 1, 2, 4... capped at 8."""
    return float(min(0.5 * 2 ** (attempt - 1), 8.0))


class GcsApi:
    """The calls, for one bucket. ``tokens`` is None for anonymous requests."""

    def __init__(self, opts: GcsOptions, tokens: TokenSource | None) -> None:
        self.opts = opts
        self.tokens = tokens
        # Set when the server refused the credentials: the VFS then builds a new client,
        # resolving the secret again (it may have been rotated).
        self.refused = False
        self._session: aiohttp.ClientSession | None = None

    # -- plumbing ----------------------------------------------------------------------------
    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.opts.connect_timeout_s,
                                            sock_read=self.opts.read_timeout_s)
            self._session = aiohttp.ClientSession(
                timeout=timeout, connector=aiohttp.TCPConnector(limit=32),
                auto_decompress=False, raise_for_status=False)
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def object_url(self, key: str, *, media: bool = False) -> str:
        base = f"{self.opts.base}/download" if media else self.opts.base
        return f"{base}/storage/v1/b/{quote(self.opts.bucket, safe='')}/o/{quote(key, safe='')}"

    @property
    def objects_url(self) -> str:
        return f"{self.opts.base}/storage/v1/b/{quote(self.opts.bucket, safe='')}/o"

    @property
    def upload_url(self) -> str:
        return f"{self.opts.base}/upload/storage/v1/b/{quote(self.opts.bucket, safe='')}/o"

    async def headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        out = dict(extra or {})
        if self.tokens is not None and not self.opts.emulator:
            out["Authorization"] = f"Bearer {await self.tokens.token(self.session)}"
        return out

    def error(self, status: int, rel: str, reason: str = "") -> TransferError:
        """The aftd error for an HTTP status of a request about ``rel``."""
        vfs = self.opts.vfs
        if status == 404:
            return fail(PathNotFoundError, vfs, rel, "no such file or directory")
        if status == 412:
            return fail(PathExistsError, vfs, rel, "target exists")
        if status in (401, 403):
            self.refused = True
            return fail(TransferError, vfs, rel, f"access denied (HTTP {status}) on bucket "
                        f"{self.opts.bucket!r}: check credentials_secret and the account's "
                        "permissions")
        cls = TransientError if status in RETRY_STATUSES else TransferError
        return fail(cls, vfs, rel, f"HTTP {status}{': ' + reason if reason else ''}")

    def lost(self, rel: str, exc: BaseException) -> TransferError:
        return fail(TransientError, self.opts.vfs, rel,
                    f"connection to {self.opts.base} failed: {type(exc).__name__}")

    # -- requests with retries ---------------------------------------------------------------
    async def retrying(self, rel: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run ``attempt`` until it succeeds, retrying dropped connections and
        :class:`TransientError` ``retries`` times with backoff."""
        for n in range(self.opts.retries + 1):
            try:
                return await attempt()
            except CONNECT_ERRORS as exc:
                err: TransferError = self.lost(rel, exc)
            except TransientError as exc:
                err = exc
            if n == self.opts.retries:
                raise err
            await asyncio.sleep(backoff(n + 1))
        raise AssertionError("unreachable")

    async def call(self, method: str, url: str, rel: str, *,
                   params: Mapping[str, str] | None = None, json_body: Any = None) -> Any:
        """A JSON request (retried); returns the decoded body of a 200."""
        data = None if json_body is None else json.dumps(json_body).encode()
        extra = {"Content-Type": "application/json"} if data is not None else {}

        async def once() -> Any:
            async with self.session.request(method, url, params=params, data=data,
                                            headers=await self.headers(extra)) as resp:
                body = await resp.read()
                if resp.status not in (200, 204):
                    raise self.error(resp.status, rel, reason(body))
                return json.loads(body) if body else {}

        return await self.retrying(rel, once)

    async def open_session(self, key: str, rel: str, metadata: Mapping[str, str]) -> str:
        """Start a resumable upload of ``key``; returns the session URI (retried)."""
        body = json.dumps({"name": key, "metadata": dict(metadata)}).encode()

        async def once() -> str:
            async with self.session.post(
                    self.upload_url, params={"uploadType": "resumable"}, data=body,
                    headers=await self.headers({"Content-Type": "application/json"})) as resp:
                text = await resp.read()
                if resp.status != 200:
                    raise self.error(resp.status, rel, reason(text))
                uri = resp.headers.get("Location", "")
            if not uri:
                raise fail(TransferError, self.opts.vfs, rel,
                           "the server opened no upload session (no Location header)")
            return uri

        return await self.retrying(rel, once)

    async def upload_whole(self, key: str, rel: str, metadata: Mapping[str, str],
                           body: bytes) -> dict[str, Any]:
        """One ``multipart`` upload (retried): the object appears complete or not at all."""

        async def once() -> dict[str, Any]:
            form = aiohttp.MultipartWriter("related")
            form.append_json({"name": key, "metadata": dict(metadata)})
            form.append(body_of(body), {"Content-Type": "application/octet-stream"})
            async with self.session.post(self.upload_url, params={"uploadType": "multipart"},
                                         data=form, headers=await self.headers()) as resp:
                text = await resp.read()
                if resp.status != 200:
                    raise self.error(resp.status, rel, reason(text))
                return dict(json.loads(text))

        return await self.retrying(rel, once)

    async def open_media(self, key: str, rel: str, start: int, end: int | None,
                         generation: str | None) -> aiohttp.ClientResponse:
        """The response streaming bytes ``[start, end)`` of the object (``end`` None: to its
        end), on condition of ``generation`` when given (one attempt; the caller closes it).
        412 (another generation) and 416 (``start`` is the end) are returned, not raised."""
        params = {"alt": "media"}
        if generation:
            params["ifGenerationMatch"] = generation
        ranged = start or end is not None
        span = {"Range": f"bytes={start}-{'' if end is None else end - 1}"} if ranged else None
        resp = await self.session.get(self.object_url(key, media=True), params=params,
                                      headers=await self.headers(span))
        if resp.status not in (200, 206, 412, 416):
            try:
                raise self.error(resp.status, rel, reason(await resp.read()))
            finally:
                resp.close()
        return resp


def body_of(data: bytes) -> io.BytesIO:
    """A request body aiohttp sends in 256 KiB writes, yielding to the loop between them (raw
    bytes over 1 MiB make it warn that they might hold the event loop up)."""
    return io.BytesIO(data)


def reason(body: bytes) -> str:
    """The error message of a JSON API error body (never echoes a request)."""
    try:
        data = json.loads(body)
        message = data["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return ""
    return str(message)[:200] if isinstance(message, str) else ""
