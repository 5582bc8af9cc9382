"""``HttpCli()`` requests, sent with the job's HTTP client (TLS verified as for ``job.http``).

An answer of any status is a response; a request that got no answer (refused, timed out, TLS
failed) is a response too, with status 0 and the reason in ``ErrorMsg()``: a SyncJS script
branches on ``Ok()``, and the article's pattern must still reach its report step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aftd.scripts.context import JobContext
from aftd.scripts.http import HttpClient, HttpError
from aftd.scripts.syncjs.hostargs import HostCallError, number, text

__all__ = ["HttpOps"]

_METHODS = frozenset({"GET", "POST", "PUT", "DELETE"})


class HttpOps:
    """One HTTP client per job (its connections are reused), closed with the job."""

    def __init__(self, ctx: JobContext) -> None:
        self._ctx = ctx
        self._client: HttpClient | None = None

    async def request(self, args: Mapping[str, Any]) -> dict[str, Any]:
        method = args.get("method")
        if method not in _METHODS:
            raise HostCallError(f"HttpCli: unknown method {method!r}")
        url = text(args, "url", "HttpCli.Url")
        if not url.startswith(("http://", "https://")):
            raise HostCallError(f"HttpCli.Url must be an absolute http:// or https:// URL, "
                                f"got {url[:100]!r}")
        headers = _headers(args.get("headers"))
        timeout = None if args.get("timeout") is None else \
            number(args, "timeout", "HttpCli.Timeout", low=0.001, high=86400)
        body = args.get("body")
        if body is not None and not isinstance(body, str):
            raise HostCallError("HttpCli: the body must be a string, an object or null")
        if self._client is None:
            self._client = self._ctx.http()
        try:
            resp = await self._client.request(
                str(method), url, headers=headers, timeout_s=timeout,
                data=body.encode("utf-8") if body is not None else None)
        except HttpError as exc:
            return {"status": 0, "headers": {}, "body": "", "error": str(exc)}
        return {"status": resp.status, "body": resp.text, "error": "",
                "headers": {k.lower(): v for k, v in resp.headers.items()}}


def _headers(raw: Any) -> dict[str, str]:
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                            for k, v in raw.items()):
        raise HostCallError("HttpCli: headers must be strings")
    for name, value in raw.items():
        if not name or any(c in name for c in ":\r\n") or any(c in value for c in "\r\n"):
            raise HostCallError(f"HttpCli.Header: {name[:100]!r} is not a valid header")
    return dict(raw)
