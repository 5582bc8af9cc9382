"""A small synchronous HTTPS client for the ``aft`` CLI (stdlib only: fast start-up)."""

from __future__ import annotations

import ipaddress
import json
import os
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aftd.config import default_state_dir
from aftd.tls import generated_cert_paths

__all__ = ["ApiClient", "ClientError", "local_cert_candidates"]


class ClientError(Exception):
    """Shown to the user as is; the CLI exits non-zero."""


def local_cert_candidates() -> list[Path]:
    """Where a daemon on this host keeps its generated certificate."""
    dirs = [default_state_dir(), Path("/var/lib/aftd")]
    return [generated_cert_paths(d)[0] for d in dirs]


def _is_local(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def ssl_context(host: str, cacert: str | None, insecure: bool) -> ssl.SSLContext:
    if insecure:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    if cacert:
        if not os.path.isfile(cacert):
            raise ClientError(f"--cacert {cacert}: no such file")
        return ssl.create_default_context(cafile=cacert)
    ctx = ssl.create_default_context()
    if _is_local(host):
        # On the daemon's own host, trust the certificate it generated for itself.
        for cert in local_cert_candidates():
            try:
                ctx.load_verify_locations(cafile=str(cert))
            except (OSError, ssl.SSLError):
                continue
    return ctx


class ApiClient:
    def __init__(self, host: str, api_key: str | None, *, cacert: str | None = None,
                 insecure: bool = False, timeout_s: float = 30.0) -> None:
        hostname, _, port = host.rpartition(":")
        if not hostname or not port.isdigit():
            raise ClientError(f"--host must be HOST:PORT, got {host!r}")
        hostname = hostname.strip("[]")
        self.base = f"https://{'[' + hostname + ']' if ':' in hostname else hostname}:{port}"
        self.api_key = api_key
        self.timeout_s = timeout_s
        self._ssl = ssl_context(hostname, cacert, insecure)

    def _request(self, method: str, path: str, body: Any = None,
                 headers: dict[str, str] | None = None, timeout: float | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        hdrs = {"Accept": "application/json", **(headers or {})}
        if self.api_key:
            hdrs["X-API-Key"] = self.api_key
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        req = urllib.request.Request(  # noqa: S310 - self.base is always https://
            self.base + path, data=data, method=method, headers=hdrs)
        try:
            return urllib.request.urlopen(  # noqa: S310 - the URL is always https://
                req, context=self._ssl, timeout=timeout or self.timeout_s)
        except urllib.error.HTTPError as exc:
            raise ClientError(_api_error(exc)) from None
        except urllib.error.URLError as exc:
            raise ClientError(f"cannot reach {self.base}: {_reason(exc)}") from None
        except (TimeoutError, OSError) as exc:
            raise ClientError(f"cannot reach {self.base}: {exc}") from None

    def call(self, method: str, path: str, body: Any = None,
             headers: dict[str, str] | None = None) -> Any:
        with self._request(method, path, body, headers) as resp:
            return json.loads(resp.read() or b"null")

    def stream_lines(self, path: str) -> Iterator[dict[str, Any]]:
        with self._request("GET", path, timeout=3600) as resp:
            for raw in resp:
                if raw.strip():
                    yield json.loads(raw)


def _api_error(exc: urllib.error.HTTPError) -> str:
    try:
        err = json.loads(exc.read())["error"]
        return f"HTTP {exc.code} {err['code']}: {err['message']}"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {exc.code} {exc.reason}"


def _reason(exc: urllib.error.URLError) -> str:
    reason = exc.reason
    if isinstance(reason, ssl.SSLCertVerificationError):
        return (f"TLS certificate not trusted ({reason.verify_message}); "
                "use --cacert FILE (or --insecure for testing)")
    return str(reason)
