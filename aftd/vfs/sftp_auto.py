"""How much an SFTP transfer keeps in flight, from the measured round trip (``"auto"`` keys).

On a long path the limit is data in flight, not CPU: one stream moves at most
``min(requests * block, the server's channel window) / RTT``. So:

* ``requests_in_flight = "auto"``: the bandwidth-delay product of :data:`TARGET_RATE` at the
  measured RTT, in requests of ``block_size``, bounded to [:data:`MIN_DEPTH`, :data:`MAX_DEPTH`]
  (loopback gets the 16 that already saturate the CPU; the bound caps memory per stream);
  writes beyond a LAN keep :data:`PEER_WINDOW` plus :data:`WINDOW_SPARE` requests in flight (at
  most :data:`MAX_WRITE_DEPTH`), as the server's window limits them anyway.
* ``streams = "auto"``: as many parallel ranged streams as it takes for
  :data:`PEER_WINDOW` per stream (what OpenSSH's sshd grants a channel) to cover the same
  product, for files of at least ``streams_min_size``; one stream below :data:`LAN_RTT`.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

__all__ = ["LAN_RTT", "MAX_AUTO_STREAMS", "MAX_DEPTH", "MAX_WRITE_DEPTH", "MIN_DEPTH",
           "MIN_PART", "PEER_WINDOW", "TARGET_RATE", "WINDOW_SPARE", "RttMeter",
           "requests_in_flight", "stream_count"]

TARGET_RATE = 256e6  # bytes/s one transfer should be able to reach
PEER_WINDOW = 2 << 20  # OpenSSH sshd's channel window: bytes unacknowledged per channel
MIN_DEPTH, MAX_DEPTH = 16, 64
# Writes beyond the server's channel window wait in asyncssh's send buffer: memory, no speed
# (measured: 8 streams of 24 writes took a 256 MiB upload to 186 MB RSS). On loopback 16 keep
# the CPU busy; on a longer path a writer keeps the window full and about two requests ready
# for when it opens (:data:`WINDOW_SPARE`). More data in flight comes from more streams.
MAX_WRITE_DEPTH = 16
WINDOW_SPARE = 2
MAX_AUTO_STREAMS = 8
LAN_RTT = 0.002  # below this, a second stream only adds CPU
MIN_PART = 8 << 20  # no stream moves less than this


class RttMeter:
    """The round trip to a server: the smallest of the last few single-request timings (the
    minimum leaves out server work and queueing behind other requests)."""

    def __init__(self, keep: int = 16,
                 answered: Callable[[BaseException], bool] = lambda _: False) -> None:
        self.samples: deque[float] = deque(maxlen=keep)
        self.answered = answered  # exceptions that still mean a full round trip (error replies)

    def observe(self, seconds: float) -> None:
        self.samples.append(max(seconds, 0.0))

    @property
    def rtt(self) -> float | None:
        return min(self.samples) if self.samples else None

    def timer(self) -> _Timer:
        return _Timer(self)


class _Timer:
    def __init__(self, meter: RttMeter) -> None:
        self.meter = meter
        self.t0 = 0.0

    def __enter__(self) -> _Timer:
        self.t0 = time.monotonic()
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, *_: object) -> None:
        if exc is None or self.meter.answered(exc):
            self.meter.observe(time.monotonic() - self.t0)


def requests_in_flight(setting: int | str, rtt: float | None, block: int, *,
                       writing: bool = False) -> int:
    """Requests one reader (or writer) keeps outstanding."""
    if isinstance(setting, int):
        return setting
    if rtt is None:
        return MIN_DEPTH
    if writing:
        if rtt < LAN_RTT:
            return MAX_WRITE_DEPTH
        return min(MAX_WRITE_DEPTH, math.ceil(PEER_WINDOW / block) + WINDOW_SPARE)
    return max(MIN_DEPTH, min(MAX_DEPTH, math.ceil(rtt * TARGET_RATE / block)))


def stream_count(setting: int | str, rtt: float | None, size: int, min_size: int,
                 sessions: int) -> int:
    """Parallel streams for one file of ``size`` bytes (at most ``sessions``, the pool's)."""
    if size < min_size or size < 2 * MIN_PART:
        return 1
    if isinstance(setting, int):
        want = setting
    elif rtt is None or rtt < LAN_RTT:
        return 1
    else:
        want = min(MAX_AUTO_STREAMS, math.ceil(rtt * TARGET_RATE / PEER_WINDOW))
    return max(1, min(want, sessions, size // MIN_PART))
