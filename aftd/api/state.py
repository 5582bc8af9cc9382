"""What the request handlers reach: one mutable holder so a reload swaps parts atomically."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from aftd.apikeys import KeyRing
from aftd.jobs.runner import Runner

__all__ = ["STATE", "ApiState"]


@dataclass
class ApiState:
    runner: Runner
    keyring: KeyRing
    metrics_open: bool = False
    outbox: Any = None  # report delivery state for job records (issue 5)
    metrics: Any = None  # callable returning (body, content type), when metrics are enabled
    started_at: float = 0.0


STATE = web.AppKey("aftd_state", ApiState)
