"""What a host does differently in a fleet: triggers and notifications live in the fleet's
database, an agent keeps the host's lease and passes on jobs queued and cancels requested
elsewhere, and the jobs of a silent host it took over are announced here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from aftd.jobs.model import Job
from aftd.jobs.runner import Runner
from aftd.notify.service import Notifications
from aftd.notify.store import NotifyStore, SqliteNotifyStore
from aftd.store.factory import Fleet
from aftd.triggers.manager import TriggerManager
from aftd.triggers.store import SqliteTriggerStore, TriggerStore

if TYPE_CHECKING:
    from aftd.store.pg.agent import FleetAgent
    from aftd.store.pg.hosts import Takeover

__all__ = ["announce_taken_over", "notify_store", "start_agent", "trigger_store"]

log = structlog.get_logger("aftd.daemon")


def trigger_store(fleet: Fleet | None, db: Path, busy_timeout_s: float) -> TriggerStore:
    """The fleet's database when there is one (a schedule or a watch fires once for the
    whole fleet), else the job store's SQLite file."""
    if fleet is not None:
        from aftd.store.pg.triggers import PgTriggerStore

        return PgTriggerStore(fleet.db)
    return SqliteTriggerStore(db, busy_timeout_s=busy_timeout_s)


def notify_store(fleet: Fleet | None, db: Path, busy_timeout_s: float) -> NotifyStore:
    if fleet is not None:  # shared by the fleet, taken over with a silent host's reports
        from aftd.store.pg.notify import PgNotifyStore

        return PgNotifyStore(fleet.db, fleet.lease)
    return SqliteNotifyStore(db, busy_timeout_s=busy_timeout_s)


def start_agent(fleet: Fleet, runner: Runner,
                on_takeover: Callable[[list[Takeover]], None]) -> FleetAgent:
    from aftd.store.pg.agent import FleetAgent, FleetHooks

    hooks = FleetHooks(on_jobs=runner.wake_claims, on_cancel=runner.cancel_local,
                       on_takeover=on_takeover,
                       on_lease_lost=runner.abandon_all,
                       poll_cancels=fleet.jobs.cancel_requested)
    agent = FleetAgent(fleet.db, fleet.lease, hooks)
    agent.start()
    return agent


async def announce_taken_over(job_ids: list[str], runner: Runner,
                              notifications: Notifications, triggers: TriggerManager,
                              stored: Callable[[str], Awaitable[Job | None]]) -> None:
    """A silent host's jobs, recorded interrupted in the database, that no runner saw end:
    announce how they ended and tell the triggers here."""
    try:  # the moved intents of the silent host's jobs: announce how they ended
        await notifications.reconcile(stored)
    except Exception as exc:  # settled at this host's next start
        log.warning("takeover_notify_failed", error=str(exc))
    for job_id in job_ids:
        try:
            job = await runner.get(job_id)
            if job is not None and job.terminal:
                await triggers.on_job_end(job)
        except Exception as exc:  # the trigger recovers it at the next start
            log.warning("takeover_trigger_update_failed", job_id=job_id, error=str(exc))
