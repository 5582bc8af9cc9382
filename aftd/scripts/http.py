"""``job.http(...)``: a small aiohttp-based HTTP client for scripts.

Base URL, bearer token, default headers, JSON bodies, timeouts, TLS verification with a
configurable CA. Responses are read fully (bounded) so scripts get plain ``status``/``ok``/
``text``/``json()`` without managing connections.
"""

from __future__ import annotations

import functools
import json as jsonlib
import ssl
from pathlib import Path
from types import TracebackType
from typing import Any, TypedDict, Unpack

import aiohttp

from aftd.errors import AftdError

__all__ = ["HttpClient", "HttpError", "HttpResponse", "RequestOptions"]

MAX_BODY = 16 << 20


class HttpError(AftdError):
    """The request could not be completed (connection, TLS, timeout, oversized answer).

    ``not_sent`` is True when no byte of the request reached the server (the connection or
    its TLS handshake failed), so the request surely had no effect.
    """

    def __init__(self, message: str, *, not_sent: bool = False) -> None:
        super().__init__(message)
        self.not_sent = not_sent


class RequestOptions(TypedDict, total=False):
    """The keyword arguments of :meth:`HttpClient.request` and its per-method shortcuts."""

    json: Any
    data: bytes | str | None
    headers: dict[str, str] | None
    params: dict[str, str] | None
    timeout_s: float | None


class HttpResponse:
    """An answer, read completely: ``status``, ``headers``, ``body`` (bytes) and the ``url``
    it came from."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes, url: str) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.url = url

    @property
    def ok(self) -> bool:
        """The status is 2xx."""
        return 200 <= self.status < 300

    @property
    def text(self) -> str:
        """The body as UTF-8 text (undecodable bytes replaced)."""
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON; :class:`HttpError` when it is not JSON."""
        try:
            return jsonlib.loads(self.body)
        except ValueError as exc:
            raise HttpError(f"response from {self.url} is not valid JSON: {exc}") from None

    def __repr__(self) -> str:
        return f"<HttpResponse {self.status} {self.url}>"


class HttpClient:
    """What ``job.http(...)`` returns; use it as ``async with job.http(url) as api:``."""

    def __init__(self, base_url: str | None = None, *, bearer: str | None = None,
                 headers: dict[str, str] | None = None, timeout_s: float = 30.0,
                 verify: bool = True, ca_file: Path | str | None = None) -> None:
        self.base_url = (base_url or "").rstrip("/")
        self._headers = dict(headers or {})
        if bearer:
            self._headers["Authorization"] = f"Bearer {bearer}"
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._ssl: ssl.SSLContext | bool = _ssl_context(verify,
                                                         str(ca_file) if ca_file else None)
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:  # never show the Authorization header
        return f"<HttpClient base_url={self.base_url!r}>"

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections (also done when the job ends)."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _url(self, url: str) -> str:
        if url.startswith(("http://", "https://")) or not self.base_url:
            return url
        return f"{self.base_url}/{url.lstrip('/')}"

    async def request(self, method: str, url: str = "", *, json: Any = None,
                      data: bytes | str | None = None, headers: dict[str, str] | None = None,
                      params: dict[str, str] | None = None,
                      timeout_s: float | None = None) -> HttpResponse:
        """Send a request and read the whole answer (at most 16 MiB).

        ``url`` is joined to the base URL unless absolute. ``json`` is sent as a JSON body,
        ``data`` as is; ``headers`` add to the client's; ``params`` become the query string;
        ``timeout_s`` overrides the client's timeout for this request. Any HTTP status is a
        response (check ``ok``); :class:`HttpError` means no answer was received.
        """
        full = self._url(url)
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        hdrs = {**self._headers, **(headers or {})}
        timeout = aiohttp.ClientTimeout(total=timeout_s) if timeout_s else None
        try:
            async with self._session.request(method, full, json=json, data=data, headers=hdrs,
                                             params=params, ssl=self._ssl,
                                             timeout=timeout) as resp:
                body = await _read_bounded(resp)
                return HttpResponse(resp.status, dict(resp.headers), body, full)
        except TimeoutError:
            raise HttpError(f"{method} {full}: timed out") from None
        except aiohttp.ClientError as exc:
            raise HttpError(f"{method} {full}: {type(exc).__name__}: {exc}",
                            not_sent=isinstance(exc, aiohttp.ClientConnectorError)) from None

    async def get(self, url: str = "", **options: Unpack[RequestOptions]) -> HttpResponse:
        """``GET``; the options are :meth:`request`'s."""
        return await self.request("GET", url, **options)

    async def post(self, url: str = "", **options: Unpack[RequestOptions]) -> HttpResponse:
        """``POST``; the options are :meth:`request`'s."""
        return await self.request("POST", url, **options)

    async def put(self, url: str = "", **options: Unpack[RequestOptions]) -> HttpResponse:
        """``PUT``; the options are :meth:`request`'s."""
        return await self.request("PUT", url, **options)

    async def delete(self, url: str = "", **options: Unpack[RequestOptions]) -> HttpResponse:
        """``DELETE``; the options are :meth:`request`'s."""
        return await self.request("DELETE", url, **options)


async def _read_bounded(resp: aiohttp.ClientResponse) -> bytes:
    chunks, size = [], 0
    async for chunk in resp.content.iter_chunked(65536):
        size += len(chunk)
        if size > MAX_BODY:
            raise HttpError(f"{resp.method} {resp.url}: response larger than {MAX_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@functools.lru_cache(maxsize=32)
def _ssl_context(verify: bool, ca_file: str | None) -> ssl.SSLContext | bool:
    """Shared per (verify, CA file): loading the trust store costs ~20 ms of blocked loop."""
    if not verify:
        return False
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx
