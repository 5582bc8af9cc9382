"""bench/latency_relay.py: bytes pass intact and in order both ways, half-close is relayed, the
added delay is at least the configured round trip, and a bandwidth cap holds bytes back."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import latency_relay


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(1 << 16):
        writer.write(data)
        await writer.drain()
    writer.write_eof()  # half-close after the client's EOF
    writer.close()


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1])
    server.close()
    await server.wait_closed()


async def _roundtrip(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def send() -> None:
        for i in range(0, len(payload), 100_000):
            writer.write(payload[i:i + 100_000])
            await writer.drain()
        writer.write_eof()

    sender = asyncio.ensure_future(send())
    got = await asyncio.wait_for(reader.read(-1), 60)
    await sender
    writer.close()
    await writer.wait_closed()
    return got


@pytest.mark.parametrize("rtt_s", [0.0, 0.02])
async def test_bytes_arrive_intact_in_order_and_eof_is_relayed(echo_port: int,
                                                                rtt_s: float) -> None:
    relay = latency_relay.Relay(("127.0.0.1", echo_port), rtt_s, buffer_bytes=1 << 20)
    port = await relay.start()
    try:
        payload = os.urandom(8 << 20)  # well over the 1 MiB buffer: back-pressure engages
        assert await _roundtrip(port, payload) == payload
    finally:
        await relay.aclose()


async def test_a_round_trip_takes_at_least_the_configured_rtt(echo_port: int) -> None:
    relay = latency_relay.Relay(("127.0.0.1", echo_port), 0.2)
    port = await relay.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"ping")
        t0 = time.monotonic()
        assert await asyncio.wait_for(reader.readexactly(4), 60) == b"ping"
        # A lower bound only: a delay can be longer on a loaded machine, never shorter.
        assert time.monotonic() - t0 >= 0.2
        writer.close()
    finally:
        await relay.aclose()


async def test_a_rate_cap_holds_bytes_back(echo_port: int) -> None:
    """4 MB at 10 MB/s each way cannot come back in under 0.4 s (lower bound only)."""
    relay = latency_relay.Relay(("127.0.0.1", echo_port), 0.0, rate_bps=10e6)
    port = await relay.start()
    try:
        payload = os.urandom(4_000_000)
        t0 = time.monotonic()
        assert await _roundtrip(port, payload) == payload
        assert time.monotonic() - t0 >= 0.4
    finally:
        await relay.aclose()


async def test_a_target_that_refuses_closes_the_client() -> None:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    dead = int(server.sockets[0].getsockname()[1])
    server.close()
    await server.wait_closed()
    relay = latency_relay.Relay(("127.0.0.1", dead), 0.0)
    port = await relay.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"x")
        # Unread bytes in the relay's socket turn its close into a reset: both are an end.
        with contextlib.suppress(ConnectionResetError):
            assert await asyncio.wait_for(reader.read(-1), 60) == b""
        writer.close()
    finally:
        await relay.aclose()
