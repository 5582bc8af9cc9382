"""A TCP relay that adds round-trip latency (and optionally a bandwidth cap) in front of a server.

    python bench/latency_relay.py --target 127.0.0.1:2222 --rtt-ms 100 [--listen-port 0]
                                  [--rate-mbps 0] [--buffer-mib 64]
    python bench/latency_relay.py --self-check [--runs 3] [--rtt-ms 100] [--connections 8]

These machines have no ``tc netem``, so WAN paths are emulated in user space: every chunk read
from one side is written to the other side RTT/2 later, in each direction (so a request and its
answer take one RTT more than on loopback). ``--rate-mbps`` serialises each direction at that
many megabytes per second before the delay (a bottleneck link); 0 means no cap. Up to
``--buffer-mib`` per direction waits in the relay (the "router buffer"); beyond that the relay
stops reading that side, which is TCP back-pressure to the sender, as on a real path.

The relay must not become the bottleneck it emulates: ``--self-check`` pushes bytes through it
(at ``--rtt-ms``, over ``--connections`` parallel connections, default RTT 0 and one) into a
plain TCP sink and compares with direct loopback connections; at an RTT the ideal is the direct
time plus one round trip (the last byte's way there, the count's way back).
When started as a child, it prints ``listening PORT`` on stdout once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import sys
import time
from collections import deque

__all__ = ["Direction", "Relay", "self_check", "start_child"]



class Direction:
    """One direction of one relayed connection: bytes wait ``delay`` (and the rate) here."""

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float, rate: float,
                 limit: int) -> None:
        self.loop, self.delay, self.rate, self.limit = loop, delay, rate, limit
        self.queue: deque[tuple[float, bytes]] = deque()
        self.queued = 0
        self.link_free = 0.0  # when the emulated bottleneck link finishes its current bytes
        self.src: asyncio.Transport | None = None
        self.dst: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.eof = False
        self.lost = False
        self.src_paused = False

    def push(self, data: bytes) -> None:
        now = self.loop.time()
        if self.rate:
            self.link_free = max(now, self.link_free) + len(data) / self.rate
            due = self.link_free + self.delay
        else:
            due = now + self.delay
        if not self.queue and due <= now:
            self._write(data)  # RTT 0 and no cap: straight through
            return
        self.queue.append((due, data))
        self.queued += len(data)
        if self.queued > self.limit and self.src is not None and not self.src_paused:
            self.src.pause_reading()
            self.src_paused = True
        if self.timer is None:
            self.timer = self.loop.call_at(self.queue[0][0], self._release)

    def close_after_drain(self, *, lost: bool = False) -> None:
        """The source sent EOF (or went away: ``lost``); pass that on once the queue drains."""
        self.eof = True
        self.lost = self.lost or lost
        if not self.queue:
            self._finish()

    def _write(self, data: bytes) -> None:
        if self.dst is not None and not self.dst.is_closing():
            self.dst.write(data)

    def _release(self) -> None:
        self.timer = None
        now = self.loop.time()
        out: list[bytes] = []
        while self.queue and self.queue[0][0] <= now:
            _, data = self.queue.popleft()
            self.queued -= len(data)
            out.append(data)
        if out:
            self._write(b"".join(out))
        if self.src_paused and self.queued <= self.limit // 2 and self.src is not None:
            self.src_paused = False
            self.src.resume_reading()
        if self.queue:
            self.timer = self.loop.call_at(self.queue[0][0], self._release)
        elif self.eof:
            self._finish()

    def _finish(self) -> None:
        if self.dst is not None and not self.dst.is_closing():
            if self.lost or not self.dst.can_write_eof():
                self.dst.close()
            else:
                self.dst.write_eof()


class _Side(asyncio.Protocol):
    """One socket of a relayed pair; what it receives goes out through ``outgoing``."""

    def __init__(self, outgoing: Direction, incoming: Direction) -> None:
        self.outgoing, self.incoming = outgoing, incoming
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.outgoing.src = transport
        self.incoming.dst = transport

    def data_received(self, data: bytes) -> None:
        self.outgoing.push(data)

    def eof_received(self) -> bool:
        self.outgoing.close_after_drain()
        return True  # keep our write half open: the other direction may still be sending

    def connection_lost(self, exc: Exception | None) -> None:
        self.outgoing.close_after_drain(lost=True)
        if self.peer is not None and self.peer.transport is not None and exc is not None:
            self.peer.transport.abort()

    # Flow control: when the socket we write to is full, stop reading the other one.
    def pause_writing(self) -> None:
        if self.incoming.src is not None:
            self.incoming.src.pause_reading()

    def resume_writing(self) -> None:
        if self.incoming.src is not None and not self.incoming.src_paused:
            self.incoming.src.resume_reading()


class Relay:
    """Listens on ``host:port`` and relays each connection to ``target`` with the delays."""

    def __init__(self, target: tuple[str, int], rtt_s: float, rate_bps: float = 0.0,
                 buffer_bytes: int = 64 << 20) -> None:
        self.target, self.rtt_s, self.rate, self.buffer = target, rtt_s, rate_bps, buffer_bytes
        self.server: asyncio.Server | None = None
        self.transports: set[asyncio.Transport] = set()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _Accepted(self), host, port)
        return int(self.server.sockets[0].getsockname()[1])

    async def aclose(self) -> None:
        if self.server is not None:
            self.server.close()
        for t in list(self.transports):
            t.abort()
        if self.server is not None:
            await self.server.wait_closed()

    def directions(self) -> tuple[Direction, Direction]:
        loop = asyncio.get_running_loop()
        half = self.rtt_s / 2
        return (Direction(loop, half, self.rate, self.buffer),
                Direction(loop, half, self.rate, self.buffer))


class _Accepted(_Side):
    """The client's side: connects to the target when a client arrives."""

    def __init__(self, relay: Relay) -> None:
        up, down = relay.directions()
        super().__init__(up, down)
        self.relay = relay

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.transport is not None:
            self.relay.transports.discard(self.transport)
        if self.peer is not None and self.peer.transport is not None:
            self.relay.transports.discard(self.peer.transport)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.transport is not None
        self.relay.transports.add(self.transport)
        self.transport.pause_reading()  # until the target is connected
        self.connecting = asyncio.ensure_future(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        assert self.transport is not None
        try:
            _, peer = await loop.create_connection(
                lambda: _Side(self.incoming, self.outgoing), *self.relay.target)
        except OSError:
            self.transport.close()  # the client sees the connection end, as sshd down would
            return
        self.peer, peer.peer = peer, self
        if peer.transport is not None:
            self.relay.transports.add(peer.transport)
        self.transport.resume_reading()


# -- self-check: is the relay faster than what it will be asked to carry? -----------------
async def _sink_server() -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        total = 0
        while chunk := await reader.read(1 << 20):
            total += len(chunk)
        writer.write(str(total).encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, int(server.sockets[0].getsockname()[1])


async def _push(port: int, nbytes: int, connections: int = 1) -> float:
    """Seconds to send ``nbytes`` to ``port`` over ``connections`` at once and hear each
    connection's count back."""
    block = os.urandom(1 << 20)
    share = (nbytes >> 20) // connections
    streams = [await asyncio.open_connection("127.0.0.1", port) for _ in range(connections)]

    async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(share):
            writer.write(block)
            await writer.drain()
        writer.write_eof()
        got = int(await reader.read())
        writer.close()
        if got != share << 20:
            raise RuntimeError(f"relay lost bytes: sent {share << 20}, received {got}")

    t0 = time.perf_counter()
    await asyncio.gather(*(one(r, w) for r, w in streams))
    return time.perf_counter() - t0


async def start_child(target: tuple[str, int], rtt_ms: float = 0.0, rate_mbps: float = 0.0,
                      ) -> tuple[asyncio.subprocess.Process, int]:
    """The relay in a process of its own (as the benchmarks run it); returns it and its port."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--target", f"{target[0]}:{target[1]}",
        "--rtt-ms", str(rtt_ms), "--rate-mbps", str(rate_mbps), stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    line = (await proc.stdout.readline()).decode()
    if not line.startswith("listening "):
        proc.kill()
        raise RuntimeError(f"relay did not start: {line!r}")
    return proc, int(line.split()[1])


async def measure(nbytes: int, runs: int, rtt_ms: float = 0.0,
                  connections: int = 1) -> dict[str, list[float]]:
    """MB/s direct and through a relay process at ``rtt_ms``, alternating, ``runs`` each
    ("ideal": what the relay would give if it only added the round trip to the direct time).

    Sender and receiver share this process (one core at most), so "direct" is the ceiling of
    this measurement; what matters is how close the relay comes to it.
    """
    server, port = await _sink_server()
    proc, rport = await start_child(("127.0.0.1", port), rtt_ms)
    out: dict[str, list[float]] = {"direct": [], "relay": [], "ideal": []}
    try:
        for _ in range(runs):
            for name, p in (("direct", port), ("relay", rport)):
                took = await _push(p, nbytes, connections)
                out[name].append(nbytes / took / 1e6)
                if name == "direct":
                    out["ideal"].append(nbytes / (took + rtt_ms / 1000) / 1e6)
    finally:
        proc.kill()
        await proc.wait()
        server.close()
    return out


def self_check(nbytes: int = 512 << 20, runs: int = 3, rtt_ms: float = 0.0,
               connections: int = 1) -> dict[str, float]:
    """Median MB/s direct, through the relay and ideal (at ``rtt_ms``), with ranges."""
    res = asyncio.run(measure(nbytes, runs, rtt_ms, connections))
    return {f"{k}_median": statistics.median(v) for k, v in res.items()} | {
        f"{k}_min": min(v) for k, v in res.items()} | {f"{k}_max": max(v) for k, v in res.items()}


def _serve(args: argparse.Namespace) -> None:
    host, _, port = args.target.rpartition(":")

    async def run() -> None:
        relay = Relay((host or "127.0.0.1", int(port)), args.rtt_ms / 1000,
                      args.rate_mbps * 1e6, args.buffer_mib << 20)
        bound = await relay.start("127.0.0.1", args.listen_port)
        print(f"listening {bound}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(run())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", help="HOST:PORT to relay to")
    ap.add_argument("--rtt-ms", type=float, default=0.0)
    ap.add_argument("--rate-mbps", type=float, default=0.0, help="MB/s per direction; 0: none")
    ap.add_argument("--buffer-mib", type=int, default=64)
    ap.add_argument("--listen-port", type=int, default=0)
    ap.add_argument("--self-check", action="store_true")
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--connections", type=int, default=1, help="self-check: in parallel")
    args = ap.parse_args()
    if args.self_check:
        r = self_check(args.size_mib << 20, args.runs, args.rtt_ms, args.connections)
        print(f"{args.connections} connection(s): direct {r['direct_median']:.0f} MB/s "
              f"({r['direct_min']:.0f}-{r['direct_max']:.0f}); relay at RTT {args.rtt_ms:g} ms "
              f"{r['relay_median']:.0f} MB/s ({r['relay_min']:.0f}-{r['relay_max']:.0f}), "
              f"ideal {r['ideal_median']:.0f}; load {os.getloadavg()[0]:.2f}")
        return
    if not args.target:
        sys.exit("--target HOST:PORT is required (or --self-check)")
    _serve(args)


if __name__ == "__main__":
    main()
