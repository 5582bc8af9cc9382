"""Fixtures for the operations tests: a real sd_notify receiver socket and binary lookup."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


class NotifyReceiver:
    """A unix datagram socket standing in for systemd's notification socket."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env_value = env_value

    def env(self, **extra: str) -> dict[str, str]:
        return {"NOTIFY_SOCKET": self.env_value, **extra}

    async def next_message(self, timeout: float = 10.0) -> dict[str, str]:
        """Wait for one datagram and parse its KEY=VALUE lines."""
        loop = asyncio.get_running_loop()
        data = await asyncio.wait_for(loop.sock_recv(self.sock, 4096), timeout)
        return parse(data)

    def drain(self) -> list[dict[str, str]]:
        """Every datagram already queued, without waiting."""
        out: list[dict[str, str]] = []
        while True:
            try:
                out.append(parse(self.sock.recv(4096)))
            except BlockingIOError:
                return out


def parse(data: bytes) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in data.decode("utf-8").split("\n"):
        key, sep, value = line.partition("=")
        assert sep, f"malformed sd_notify line {line!r}"
        fields[key] = value
    return fields


def _bound(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.setblocking(False)
    return sock


@pytest.fixture
def notify_path() -> Iterator[NotifyReceiver]:
    # A short directory under /tmp: pytest's tmp_path can exceed the 108-byte sun_path limit.
    directory = tempfile.mkdtemp(prefix="aftd-ntf-")
    path = os.path.join(directory, "notify")
    sock = _bound(path)
    try:
        yield NotifyReceiver(sock, path)
    finally:
        sock.close()
        shutil.rmtree(directory)


@pytest.fixture
def notify_abstract() -> Iterator[NotifyReceiver]:
    name = f"aftd-test-{uuid.uuid4().hex}"
    sock = _bound("\0" + name)
    try:
        yield NotifyReceiver(sock, "@" + name)
    finally:
        sock.close()


def _require_binary(name: str) -> str:
    """Path of an external tool; missing fails under CI=true and skips otherwise."""
    found = shutil.which(name)
    if found is None:
        message = f"{name} not found on PATH"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture
def require_binary() -> Callable[[str], str]:
    return _require_binary


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]
