"""This host's lease on the fleet store: its id, tags and the epoch every write is fenced by.

The epoch is bumped in the database whenever a host (re)registers or is taken over, so a write
that carries an old epoch changes nothing. The one side effect a database cannot fence, an HTTP
POST of a report, is guarded here: a host sends only while its last successful heartbeat is
younger than the lease.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

__all__ = ["Lease"]


@dataclass
class Lease:
    host_id: str
    tags: tuple[str, ...]
    lease_s: float
    epoch: int = 0
    # time.monotonic() when the last successful heartbeat was sent (None: never, or lost).
    renewed_at: float | None = None
    # Since when heartbeats have succeeded without a gap (takeovers wait a whole lease after
    # the database came back, so every live host had its chance to renew).
    up_since: float | None = None
    lost: bool = False
    _clock: object = field(default=time.monotonic, repr=False)

    def now(self) -> float:
        return time.monotonic()

    def valid(self) -> bool:
        """True while this host may act on what it owns (send reports)."""
        return (not self.lost and self.renewed_at is not None
                and self.now() - self.renewed_at < self.lease_s * 0.9)

    def renewed(self, sent_at: float) -> None:
        if self.up_since is None:
            self.up_since = sent_at
        self.renewed_at = sent_at

    def failed(self) -> None:
        self.up_since = None

    def may_take_over(self) -> bool:
        """True once this host has renewed without a gap for a whole lease."""
        return self.up_since is not None and self.now() - self.up_since >= self.lease_s
