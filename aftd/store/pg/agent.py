"""The fleet host's background work: renew the lease, take over silent hosts, and listen.

One task renews the lease every third of ``lease_s`` and, once this host has been renewing for a
whole lease without a gap, takes over hosts that went silent (a database outage makes every host
silent; waiting a lease after it ends lets each live host renew before anyone is judged). A
lost lease (this host was taken over while it could not reach the database) is handed to
``on_lease_lost`` and the host registers again under a new epoch. Another task keeps a
connection that ``LISTEN``s for new jobs and cancels, and reconnects with backoff (a database
restart drops it; the listens are issued again on the new connection).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import structlog

from aftd.store.errors import StoreError
from aftd.store.pg.db import Db
from aftd.store.pg.hosts import Takeover, heartbeat, register, take_over_silent
from aftd.store.pg.jobs import CANCEL_CHANNEL, JOBS_CHANNEL
from aftd.store.pg.lease import Lease

__all__ = ["FleetAgent", "FleetHooks"]

log = structlog.get_logger("aftd.fleet")

_BACKOFF_FIRST_S = 0.5
_BACKOFF_MAX_S = 10.0


@dataclass
class FleetHooks:
    """What the daemon does when the fleet tells it something."""

    on_jobs: Callable[[], None]  # a job was queued somewhere (or the connection came back)
    on_cancel: Callable[[str], None]  # a job was asked to cancel (maybe not running here)
    on_takeover: Callable[[list[Takeover]], None]  # reports were moved to this host
    on_lease_lost: Callable[[], Awaitable[None]]  # this host was taken over
    poll_cancels: Callable[[], Awaitable[list[str]]]  # running jobs with a cancel request


class FleetAgent:
    def __init__(self, db: Db, lease: Lease, hooks: FleetHooks) -> None:
        self._db = db
        self._lease = lease
        self._hooks = hooks
        self._tasks: list[asyncio.Task[None]] = []
        self._listener: asyncpg.Connection | None = None
        self.connected = False

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._lease_loop(), name="aftd-fleet-lease"),
                       asyncio.create_task(self._listen_loop(), name="aftd-fleet-listen")]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._listener.close(), 2.0)
            self._listener = None

    # -- lease ---------------------------------------------------------------------------------
    async def _lease_loop(self) -> None:
        interval = self._lease.lease_s / 3
        failing = False
        while True:
            await asyncio.sleep(interval)
            try:
                await self._tick()
            except StoreError as exc:
                self._lease.failed()
                if not failing:
                    log.error("fleet_store_unavailable", error=str(exc),
                              note="retrying; running jobs go on, triggers get 503")
                failing = True
                continue
            except Exception:
                log.exception("fleet_lease_error")
                continue
            if failing:
                log.info("fleet_store_back")
                self._hooks.on_jobs()
            failing = False

    async def _tick(self) -> None:
        lease = self._lease
        if not await heartbeat(self._db, lease):
            log.error("host_lease_lost", host_id=lease.host_id, epoch=lease.epoch,
                      note="another host took this one over; its jobs were recorded "
                           "interrupted there and are stopped here")
            await self._hooks.on_lease_lost()
            await register(self._db, lease)
            log.info("host_registered", host_id=lease.host_id, epoch=lease.epoch)
            self._hooks.on_jobs()
            return
        if lease.may_take_over():
            done = await take_over_silent(self._db, lease)
            for t in done:
                log.warning("host_taken_over", silent_host=t.host_id,
                            jobs_interrupted=len(t.jobs_interrupted),
                            intents_released=t.intents_released, reports_moved=t.reports_moved)
            if done:
                self._hooks.on_takeover(done)
        for job_id in await self._hooks.poll_cancels():
            self._hooks.on_cancel(job_id)

    # -- LISTEN --------------------------------------------------------------------------------
    async def _listen_loop(self) -> None:
        delay = _BACKOFF_FIRST_S
        while True:
            try:
                conn = await self._db.connect()
            except StoreError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, _BACKOFF_MAX_S)
                continue
            self._listener = conn
            lost = asyncio.Event()
            conn.add_termination_listener(lambda _c, lost=lost: lost.set())
            try:
                await conn.add_listener(JOBS_CHANNEL, self._on_notify)
                await conn.add_listener(CANCEL_CHANNEL, self._on_notify)
                self.connected = True
                delay = _BACKOFF_FIRST_S
                self._hooks.on_jobs()  # whatever was queued while nobody listened
                await self._watch(conn, lost)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
                pass
            finally:
                self.connected = False
                self._listener = None
                with contextlib.suppress(Exception):
                    conn.terminate()
            await asyncio.sleep(delay)
            delay = min(delay * 2, _BACKOFF_MAX_S)

    async def _watch(self, conn: asyncpg.Connection, lost: asyncio.Event) -> None:
        """Until the connection is lost (a cheap query now and then notices a silent cut)."""
        while not lost.is_set() and not conn.is_closed():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), 5.0)
            if not lost.is_set():
                await asyncio.wait_for(conn.fetchval("SELECT 1"), 5.0)

    def _on_notify(self, _conn: object, _pid: int, channel: str, payload: str) -> None:
        if channel == JOBS_CHANNEL:
            self._hooks.on_jobs()
        elif channel == CANCEL_CHANNEL:
            self._hooks.on_cancel(payload)
