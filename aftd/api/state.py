"""What the request handlers reach: one mutable holder so a reload swaps parts atomically."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from aftd.api.connections import ConnectionTracker
from aftd.api.registry import Registry
from aftd.apikeys import KeyRing
from aftd.jobs.runner import Runner
from aftd.serverconfig import ServerConfig
from aftd.sessions import SessionStore
from aftd.throughput import ThroughputRing
from aftd.triggers.manager import TriggerManager

__all__ = ["CONNECTIONS", "LIMITS", "REGISTRY", "STATE", "ApiState"]


@dataclass
class ApiState:
    runner: Runner
    keyring: KeyRing
    metrics_open: bool = False
    outbox: Any = None  # the Outbox: a job record's report delivery state
    metrics: Any = None  # callable returning (body, content type), when metrics are enabled
    started_at: float = 0.0
    # The console's sign-in sessions (None: the console is off, /v1/session answers 404).
    sessions: SessionStore | None = None
    throughput: ThroughputRing | None = None  # bytes per minute, the last hour
    triggers: TriggerManager | None = None  # schedules and watches (None: not running)
    # This host's [host] tags when it is the only host (a job needing others is refused);
    # None in a fleet, where another host may have them.
    host_tags: tuple[str, ...] | None = ()


STATE = web.AppKey("aftd_state", ApiState)
# The [server] settings: request size limits, list page budget, body and write deadlines.
LIMITS = web.AppKey("aftd_limits", ServerConfig)
# Set by the listener (aftd.api.server) so requests can tell their connection's guard.
CONNECTIONS = web.AppKey("aftd_connections", ConnectionTracker)
# Every route of the app: the router and /v1/openapi.json are built from it.
REGISTRY = web.AppKey("aftd_registry", Registry)
