"""Idle, slow and excess connections are closed; a client that vanishes mid-body costs one line.

The hostile daemon runs with 2 s header, body and keep-alive timeouts. Waits are bounded but
generous (a loaded machine is slow): the tests assert that a connection closes, not how fast.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from pathlib import Path

import pytest

from tests.api.conftest import TIGHT, spawn
from tests.api.rawclient import (
    KEY,
    assert_error,
    assert_no_traceback,
    call,
    parse,
    read_all,
    request_bytes,
    strict_loads,
    tls,
)
from tests.fixtures.daemon import DaemonProcess


def _wait_log(d: DaemonProcess, needle: str, limit_s: float = 30.0) -> None:
    deadline = time.monotonic() + limit_s
    while needle not in d.logs():
        assert time.monotonic() < deadline, f"{needle} not logged:\n{d.logs()[-3000:]}"
        time.sleep(0.05)


def test_disconnect_mid_body_is_one_log_line(hostile: DaemonProcess) -> None:
    before = hostile.logs().count('"request_body_incomplete"')
    with tls(hostile) as s:
        s.sendall(request_bytes("POST", "/v1/jobs", [(b"X-API-Key", KEY),
                                                     (b"Content-Length", b"5000")])
                  + b'{"scriptId": "hel')
        time.sleep(0.3)
    deadline = time.monotonic() + 30
    while hostile.logs().count('"request_body_incomplete"') == before:
        assert time.monotonic() < deadline, hostile.logs()[-3000:]
        time.sleep(0.05)
    assert call(hostile, "GET", "/v1/health")[0] == 200
    assert_no_traceback(hostile)


def test_slow_body_is_cut_off_with_408(hostile: DaemonProcess) -> None:
    with tls(hostile) as s:
        s.sendall(request_bytes("POST", "/v1/jobs", [(b"X-API-Key", KEY),
                                                     (b"Content-Length", b"1000")], close=False)
                  + b'{"scriptId"')
        raw = b""
        # Dribble a byte a second: never enough to finish within body_timeout_s.
        for _ in range(30):
            try:
                s.sendall(b" ")
                s.settimeout(1.0)
                chunk = s.recv(65536)
                if not chunk:
                    break
                raw += chunk
            except TimeoutError:
                continue
            except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
                break
        else:
            raise AssertionError("slow body still being accepted after 30 s")
        with contextlib.suppress(AssertionError):
            raw += read_all(s, 10)
    status, _, body = parse(raw)
    assert_error(status, strict_loads(body), 408, "body_timeout")
    assert "server.body_timeout_s" in strict_loads(body)["error"]["message"]
    _wait_log(hostile, '"request_body_timeout"')


def test_unauthenticated_slow_body_is_also_closed(hostile: DaemonProcess) -> None:
    with tls(hostile) as s:
        s.sendall(request_bytes("POST", "/v1/jobs", [(b"Content-Length", b"100000")],
                                close=False) + b"{")
        raw = read_all(s, 40)  # 401 at once, then closed after at most the lingering time
    assert parse(raw)[0] == 401


def test_idle_connection_without_a_request_is_closed(hostile: DaemonProcess) -> None:
    with tls(hostile) as s:
        assert read_all(s, 30) == b""
    _wait_log(hostile, '"connection_timed_out"')


def test_slow_headers_are_closed(hostile: DaemonProcess) -> None:
    with tls(hostile) as s:
        s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")
        for _ in range(40):
            try:
                s.sendall(b"X-Slow: 1\r\n")
            except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
                break
            s.settimeout(0.5)
            try:
                if s.recv(1024) == b"":
                    break
            except TimeoutError:
                continue
            except (ConnectionResetError, ssl.SSLError):
                break
        else:
            raise AssertionError("headers sent slowly still accepted after 20 s")


def test_idle_keep_alive_connection_is_closed(hostile: DaemonProcess) -> None:
    with tls(hostile) as s:
        s.sendall(request_bytes("GET", "/v1/health", [(b"X-API-Key", KEY)], close=False))
        s.settimeout(10)
        first = s.recv(65536)
        assert first.startswith(b"HTTP/1.1 200"), first
        rest = read_all(s, 30)  # nothing more comes; the server closes the idle connection
    assert b"HTTP/1.1" not in rest


def test_tls_handshake_that_never_starts_is_closed(hostile: DaemonProcess) -> None:
    with socket.create_connection(("127.0.0.1", hostile.port), timeout=30) as s:
        s.settimeout(30)
        with contextlib.suppress(ConnectionResetError):
            assert s.recv(1024) == b""


@pytest.fixture
def capped(tmp_path: Path) -> DaemonProcess:
    config = TIGHT.replace("max_connections = 64", "max_connections = 8").replace(
        "header_timeout_s = 2", "header_timeout_s = 60").replace(
        "keepalive_timeout_s = 2", "keepalive_timeout_s = 60")
    d = spawn(tmp_path, server_config=config)
    yield d  # type: ignore[misc]
    d.stop()


def _refused(d: DaemonProcess) -> bool:
    """True if a new connection is closed before a request can be answered."""
    try:
        with tls(d, timeout=10) as s:
            s.sendall(request_bytes("GET", "/livez"))
            return read_all(s, 20) == b""
    except (ConnectionResetError, ssl.SSLError, BrokenPipeError, OSError):
        return True


def test_connections_over_the_cap_are_refused(capped: DaemonProcess) -> None:
    held = []
    try:
        # The daemon's own readiness probe may still be closing: allow it a moment.
        for _ in range(8):
            held.append(tls(capped))
        for s in held:  # each one is really served
            s.sendall(request_bytes("GET", "/livez", close=False))
            s.settimeout(10)
            assert s.recv(4096).startswith(b"HTTP/1.1 200")
        assert _refused(capped)
        assert _refused(capped)
    finally:
        for s in held:
            s.close()
    deadline = time.monotonic() + 30
    while True:  # the slots free up as the daemon sees the closes
        with contextlib.suppress(OSError, AssertionError, ssl.SSLError):
            if call(capped, "GET", "/v1/health")[0] == 200:
                break
        assert time.monotonic() < deadline, capped.logs()[-3000:]
        time.sleep(0.1)
    _wait_log(capped, '"connections_refused"')
    assert_no_traceback(capped)


def test_body_over_max_body_bytes_is_413_and_closed(hostile: DaemonProcess) -> None:
    body = b'{"scriptId": "hello", "pad": "' + b"x" * (1 << 20) + b'"}'
    with tls(hostile) as s:
        with contextlib.suppress(ConnectionResetError, BrokenPipeError, ssl.SSLError):
            s.sendall(request_bytes("POST", "/v1/jobs", [(b"X-API-Key", KEY)], body))
        status, _, data = parse(read_all(s, 30))
    assert_error(status, strict_loads(data), 413, "too_large")
    assert "server.max_body_bytes" in strict_loads(data)["error"]["message"]


def test_log_follower_that_stops_reading_is_disconnected(hostile: DaemonProcess) -> None:
    """A follower that never reads cannot pin the daemon's writer (and its buffers) forever."""
    hostile.write_script("flood", '''
import asyncio

async def main(job):
    for i in range(3000):
        job.log.info("flood", i=i, pad="f" * 2000)
    await asyncio.sleep(60)
''')
    status, job = call(hostile, "POST", "/v1/jobs", {"scriptId": "flood"})
    assert status == 201, job
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a tiny window: writes back up
    raw.settimeout(20)
    raw.connect(("127.0.0.1", hostile.port))
    with hostile.ssl_context().wrap_socket(raw, server_hostname="127.0.0.1") as s:
        s.sendall(request_bytes("GET", f"/v1/jobs/{job['jobId']}/log?follow=true",
                                [(b"X-API-Key", KEY)]))
        _wait_log(hostile, '"log_follower_too_slow"', limit_s=60)
    assert call(hostile, "POST", f"/v1/jobs/{job['jobId']}/cancel")[0] == 200
    assert_no_traceback(hostile)
