"""A hostile HTTPS client on raw sockets: it sends exactly the bytes a test gives, on loopback."""

from __future__ import annotations

import json
import socket
import ssl
import time
from collections.abc import Sequence
from typing import Any

from tests.fixtures.daemon import API_KEY, DaemonProcess

KEY = API_KEY.encode()


def tls(d: DaemonProcess, timeout: float = 20.0) -> ssl.SSLSocket:
    sock = socket.create_connection(("127.0.0.1", d.port), timeout=timeout)
    return d.ssl_context().wrap_socket(sock, server_hostname="127.0.0.1")


def request_bytes(method: str, path: str, headers: Sequence[tuple[bytes, bytes]] = (),
                  body: bytes | None = None, close: bool = True) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
    if close:
        head += b"Connection: close\r\n"
    for name, value in headers:
        head += name + b": " + value + b"\r\n"
    if body is not None:
        head += b"Content-Length: %d\r\nContent-Type: application/json\r\n" % len(body)
    return head + b"\r\n" + (body or b"")


def read_all(sock: ssl.SSLSocket, limit_s: float = 30.0) -> bytes:
    """Everything until the server closes; raises if it stays open past ``limit_s``."""
    out = b""
    deadline = time.monotonic() + limit_s
    sock.settimeout(1.0)
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except (ConnectionResetError, ssl.SSLError, BrokenPipeError):
            return out
        if not chunk:
            return out
        out += chunk
    raise AssertionError(f"connection still open after {limit_s} s; got {out[:200]!r}")


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return status, headers, body


def strict_loads(body: bytes) -> Any:
    """Parse as a strict client would: NaN and Infinity are errors."""
    def refuse(token: str) -> Any:
        raise ValueError(f"non-JSON number {token}")

    return json.loads(body, parse_constant=refuse)


def send(d: DaemonProcess, data: bytes, limit_s: float = 30.0) -> tuple[int, dict[str, str], Any]:
    """Send raw bytes on a fresh connection; the response, with a strictly parsed JSON body."""
    with tls(d) as s:
        s.sendall(data)
        status, headers, body = parse(read_all(s, limit_s))
    assert headers.get("content-type", "").startswith("application/json"), (status, body)
    return status, headers, strict_loads(body)


def call(d: DaemonProcess, method: str, path: str, body: Any = None,
         headers: list[tuple[bytes, bytes]] | None = None) -> tuple[int, Any]:
    """An ordinary authenticated request (JSON body or raw bytes)."""
    raw = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    status, _, data = send(d, request_bytes(method, path, [(b"X-API-Key", KEY), *(headers or [])],
                                            raw))
    return status, data


def assert_error(status: int, data: Any, expected_status: int, code: str | None = None) -> None:
    assert status == expected_status, (status, data)
    assert set(data) == {"error"}, data
    assert isinstance(data["error"]["message"], str) and data["error"]["message"]
    if code is not None:
        assert data["error"]["code"] == code, data


def assert_no_traceback(d: DaemonProcess) -> None:
    logs = d.logs()
    assert "Traceback" not in logs, logs[-4000:]
    assert '"request_failed"' not in logs, logs[-4000:]
