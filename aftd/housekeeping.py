"""The daemon's periodic chores: the store's health for the watchdog, the status line for
systemd, and pruning records older than ``jobs.retention_days``."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable

import structlog

from aftd.sdnotify import Notifier

__all__ = ["PRUNE_INTERVAL_S", "STATUS_INTERVAL_S", "StoreHealth", "prune_loop", "status_loop"]

log = structlog.get_logger("aftd.daemon")

STATUS_INTERVAL_S = 2.0
PRUNE_INTERVAL_S = 3600.0
STORE_PING_INTERVAL_S = 5.0
STORE_PING_TIMEOUT_S = 10.0

Prune = Callable[[float], Awaitable[object]]


class StoreHealth:
    """The store's health as last pinged: the watchdog reads it without waiting on the store."""

    def __init__(self) -> None:
        self.ok = True

    def healthy(self) -> bool:
        return self.ok

    async def watch(self, ping: Callable[[], Awaitable[bool]]) -> None:
        """Keep the watchdog's view of the store fresh without blocking the loop on it."""
        while True:
            try:
                ok = await asyncio.wait_for(ping(), STORE_PING_TIMEOUT_S)
            except TimeoutError:
                ok = False
            if ok != self.ok:
                (log.info if ok else log.error)("store_health", ok=ok)
            self.ok = ok
            await asyncio.sleep(STORE_PING_INTERVAL_S)


async def status_loop(notifier: Notifier, text: Callable[[], str]) -> None:
    while True:
        await asyncio.sleep(STATUS_INTERVAL_S)
        notifier.status(text())


async def prune_loop(retention_days: Callable[[], float],
                     prune_jobs: Callable[[float], Awaitable[int]], *others: Prune) -> None:
    """Every hour: jobs older than the retention (read at each round: a reload may change
    it), then the other records ``others`` prune."""
    while True:
        days = retention_days()
        if days > 0:
            horizon = time.time() - days * 86400
            try:
                n = await prune_jobs(horizon)
                if n:
                    log.info("jobs_pruned", count=n, retention_days=days)
                for prune in others:
                    await prune(horizon)
            except (sqlite3.Error, OSError) as exc:
                log.warning("prune_failed", error=str(exc))
        await asyncio.sleep(PRUNE_INTERVAL_S)
