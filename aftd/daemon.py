"""The daemon's lifecycle: start-up -> serve -> reload -> bounded graceful shutdown.

All signal handling lives here. Start-up order matters: config -> the state-dir lock -> TLS ->
bind the port -> open the store, settle interrupted jobs, resume the queue and the outbox ->
serve and READY=1. Any failure before the store is opened leaves every job and report as it was;
any failure at all ends in one ``startup_failed`` log line that names the cause.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import ssl
import sys
import threading
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from aftd import __version__, executors, notify, progress
from aftd.api.app import build_app
from aftd.api.server import ApiServer
from aftd.api.state import ApiState
from aftd.apikeys import KeyRing, hand_over_initial_key, load_or_create_generated
from aftd.config import ApiKeyConfig, Config, ConsoleConfig, load_config
from aftd.console import add_console
from aftd.errors import AftdError, ConfigError
from aftd.jobs.model import Job
from aftd.jobs.recorder import STORE_FLUSH_S
from aftd.jobs.runner import CANCEL_WAIT_S, Runner
from aftd.jobs.triggering import RunnerPort
from aftd.logging import configure_logging
from aftd.loopwatch import LoopWatch
from aftd.metrics import Metrics, http_metrics_middleware
from aftd.notify.channel import NotifyChannel
from aftd.notify.service import Notifications
from aftd.notify.store import NotifyStore, SqliteNotifyStore
from aftd.report.outbox import Outbox
from aftd.scripts.context import Services
from aftd.scripts.isolation import WorkerPool
from aftd.scripts.loader import ScriptLoader
from aftd.sdnotify import Notifier, watchdog_loop
from aftd.secrets.chain import SecretChain
from aftd.sessions import SessionStore
from aftd.statelock import StateLock
from aftd.stdio import routed_stdio
from aftd.store.errors import StoreError
from aftd.store.factory import DB_NAME, Fleet, open_stores
from aftd.throughput import ThroughputRing
from aftd.tls import ensure_self_signed, server_context
from aftd.triggers.base import TriggerContext
from aftd.triggers.firing import Firing
from aftd.triggers.follow import follow_pauses
from aftd.triggers.manager import TriggerManager
from aftd.triggers.store import SqliteTriggerStore, TriggerStore
from aftd.vfs.base import Vfs
from aftd.vfs.registry import VfsPool

if TYPE_CHECKING:
    from aftd.store.pg.hosts import Takeover

__all__ = ["SHUTDOWN_OVERHEAD_S", "Daemon", "serve"]

log = structlog.get_logger("aftd.daemon")

STATUS_INTERVAL_S = 2.0
PRUNE_INTERVAL_S = 3600.0
STORE_PING_INTERVAL_S = 5.0
FOLLOW_PAUSES_S = 2.0  # a fleet host reads pauses made on other hosts this often
STORE_PING_TIMEOUT_S = 10.0
# Shutdown steps after the jobs' grace period, each bounded (README, "Stopping").
OUTBOX_FLUSH_S = 5.0
WEB_SHUTDOWN_S = 5.0
TRIGGERS_STOP_S = 5.0
BACKENDS_CLOSE_S = 5.0
LOOP_CLOSE_S = 2.0
# Closing the loop: leftover tasks, the default executor, then other threads, each bounded.
SHUTDOWN_OVERHEAD_S = (TRIGGERS_STOP_S + CANCEL_WAIT_S + STORE_FLUSH_S + OUTBOX_FLUSH_S
                       + WEB_SHUTDOWN_S + BACKENDS_CLOSE_S + 3 * LOOP_CLOSE_S)


@dataclass
class _Backends:
    """The reloadable resources a job is started with."""

    secrets: SecretChain
    vfs: VfsPool

    async def aclose(self) -> None:
        await self.vfs.aclose()
        await self.secrets.aclose()


class Daemon:
    def __init__(self, config: Config, config_path: str | None = None) -> None:
        self.config = config
        self.config_path = config_path
        executors.configure(config.executors)
        self.notifier = Notifier.from_env()
        self.metrics = Metrics()
        self.throughput = ThroughputRing()
        self._stop = asyncio.Event()
        self._signals = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._lock: StateLock | None = None
        self._store_ok = True
        self.loopwatch = LoopWatch(config.jobs.loop_block_warn_s,
                                   scripts_dir=config.paths.scripts_dir,
                                   on_blocked=self.metrics.count_loop_block,
                                   on_unblocked=self.metrics.add_loop_blocked_seconds)

    # -- start-up ------------------------------------------------------------------------------
    async def run(self) -> int:
        try:
            await self._start()
        except Exception as exc:
            log.error("startup_failed", error=_startup_cause(exc))
            await self._close_parts()
            return 1
        self._install_signals()
        await self._stop.wait()
        await self._shutdown()
        return 0

    async def _start(self) -> None:
        """config (given) -> lock -> TLS -> bind -> store, recovery, queue, outbox -> READY.

        Nothing in ``state_dir`` is read or changed before the lock is held, and nothing is
        recovered or run before the port is bound: a start that fails leaves every job and
        report exactly as it was."""
        cfg = self.config
        self.loopwatch.start()
        state_dir = cfg.paths.state_dir
        self._lock = StateLock.acquire(state_dir)
        ssl_ctx, cert = self._tls(cfg)
        self.web = ApiServer(cfg.server, ssl_ctx)
        try:
            self.web.bind()
        except OSError as exc:
            raise AftdError(f"cannot listen on {cfg.server.host}:{cfg.server.port}: "
                            f"{exc.strerror or exc}") from None
        await self._open_state(cfg, state_dir)
        await self._serve(cfg, cert)
        # After the store, the runner and the API: a trigger submits like an API call does.
        await self.triggers.start(cfg.triggers)
        self._tasks = [asyncio.create_task(c, name=n) for n, c in (
            ("aftd-watchdog", watchdog_loop(self.notifier, self._healthy)),
            ("aftd-status", self._status_loop()),
            ("aftd-prune", self._prune_loop()),
            ("aftd-store-ping", self._ping_loop()),
        )]
        read = getattr(self.trigger_store, "paused_states", None)
        if read is not None:  # a fleet's shared store: follow pauses made on other hosts
            self._tasks.append(asyncio.create_task(follow_pauses(
                self.triggers, read, FOLLOW_PAUSES_S), name="aftd-trigger-follow"))
        self.notifier.ready(self._status_text())

    def _tls(self, cfg: Config) -> tuple[ssl.SSLContext, Path]:
        cert, key = cfg.server.tls_cert, cfg.server.tls_key
        if cert is None or key is None:
            cert, key = ensure_self_signed(cfg.paths.state_dir)
        return server_context(cert, key), cert

    async def _open_state(self, cfg: Config, state_dir: Path) -> None:
        """Open the store and the outbox, settle what the last process left, resume."""
        busy = cfg.store.busy_timeout_s
        # The secrets first: a fleet store's password is one.
        self.backends = await _build_backends(cfg, self.metrics)
        hint = f" --config {self.config_path}" if self.config_path else ""
        self.stores = await open_stores(cfg, self.backends.secrets, hint)
        self.store = self.stores.jobs
        self.outbox = Outbox(state_dir / DB_NAME, cfg.reports, self.backends.secrets,
                             ca_file=cfg.http.ca_file, on_outcome=self._on_report_outcome,
                             on_abandoned=self._report_abandoned, busy_timeout_s=busy,
                             store=self.stores.outbox)
        await self._open_notifications(cfg, state_dir)
        await self.outbox.start()
        fleet = self.stores.fleet
        if fleet is not None:
            fleet.spool.on_replayed = self.outbox.wake
            # What the last process spooled while the database was down goes in before its
            # leftover intents are released (a final body it recorded wins).
            await fleet.spool.replay_now()
        # Nothing runs yet: every open intent is orphaned and owed as a failure report.
        await self.outbox.release_all_intents()
        self.workers = WorkerPool(cfg.scripts, cfg.logging.level)
        if cfg.scripts.isolation == "process":
            self.workers.warm_up()
        self.runner = Runner(self.store, ScriptLoader(cfg.paths.scripts_dir),
                             self._services(cfg, self.backends), cfg.jobs, workers=self.workers,
                             claims=self.stores.claims)
        self.runner.add_end_hook(self._count_job_end)
        self.runner.add_end_hook(self._release_reports)
        await self._open_triggers(self._trigger_store(state_dir / DB_NAME, busy))
        self.runner.add_start_hook(self.notifications.job_started)
        self.runner.add_end_hook(self.notifications.job_ended)
        await self.runner.start()
        # After the runner announced the jobs it found interrupted: what is left are jobs
        # whose end was stored but not announced.
        await self.notifications.reconcile(self.store.get)
        if fleet is not None:
            self._start_fleet_agent(fleet)
        self._wire_metrics()

    def _trigger_store(self, db: Path, busy_timeout_s: float) -> TriggerStore:
        """The fleet's database when there is one (a schedule or a watch fires once for the
        whole fleet), else the job store's SQLite file."""
        fleet = self.stores.fleet
        if fleet is not None:
            from aftd.store.pg.triggers import PgTriggerStore

            return PgTriggerStore(fleet.db)
        return SqliteTriggerStore(db, busy_timeout_s=busy_timeout_s)

    async def _open_triggers(self, store: TriggerStore) -> None:
        """The trigger store and manager; its end hook is in place before the runner settles
        the jobs the last process left (the manager starts later, see _start)."""
        self.trigger_store = store
        await self.trigger_store.open()
        cfg = self.config
        port = RunnerPort(self.runner,
                          host_tags=None if cfg.store.fleet else tuple(cfg.host.tags),
                          trigger_tags=self._trigger_tags)
        ctx = TriggerContext(self.trigger_store, port, self._vfs,
                             Firing(self.trigger_store, port), self.metrics,
                             on_error=self._trigger_error)
        # In a fleet a job fired here may run on another host: its end is looked up.
        self.triggers = TriggerManager(ctx, shared_jobs=self.stores.fleet is not None)
        self.runner.add_end_hook(self.triggers.on_job_end)

    def _vfs(self, name: str) -> Vfs:
        # Looked up at each use: a reload replaces the pool.
        return self.backends.vfs.get(name)

    def _trigger_tags(self, name: str) -> tuple[str, ...]:
        # Looked up at each fire: a reload may change them.
        for trigger in self.config.triggers:
            if trigger.name == name:
                return tuple(trigger.host_tags)
        return ()

    def _on_takeover(self, done: list[Takeover]) -> None:
        """Reports of a silent host moved here: deliver them. Its jobs were recorded
        interrupted in the database, so no runner saw them end: tell the triggers here."""
        self.outbox.wake()
        ids = [job_id for t in done for job_id in t.jobs_interrupted]
        if ids:
            self._tasks.append(asyncio.create_task(self._ended_elsewhere(ids),
                                                   name="aftd-takeover-ends"))

    async def _ended_elsewhere(self, job_ids: list[str]) -> None:
        try:  # the moved intents of the silent host's jobs: announce how they ended
            await self.notifications.reconcile(self.store.get)
        except Exception as exc:  # settled at this host's next start
            log.warning("takeover_notify_failed", error=str(exc))
        for job_id in job_ids:
            try:
                job = await self.runner.get(job_id)
                if job is not None and job.terminal:
                    await self.triggers.on_job_end(job)
            except Exception as exc:  # the trigger recovers it at the next start
                log.warning("takeover_trigger_update_failed", job_id=job_id, error=str(exc))

    def _start_fleet_agent(self, fleet: Fleet) -> None:
        from aftd.store.pg.agent import FleetAgent, FleetHooks

        hooks = FleetHooks(on_jobs=self.runner.wake_claims, on_cancel=self.runner.cancel_local,
                           on_takeover=self._on_takeover,
                           on_lease_lost=self.runner.abandon_all,
                           poll_cancels=fleet.jobs.cancel_requested)
        self.fleet_agent = FleetAgent(fleet.db, fleet.lease, hooks)
        self.fleet_agent.start()

    async def _open_notifications(self, cfg: Config, state_dir: Path) -> None:
        """The notification store and its channel in the outbox (README, "Notifications")."""
        store: NotifyStore
        fleet = self.stores.fleet
        if fleet is not None:  # shared by the fleet, taken over with a silent host's reports
            from aftd.store.pg.notify import PgNotifyStore

            store = PgNotifyStore(fleet.db, fleet.lease)
        else:
            store = SqliteNotifyStore(state_dir / DB_NAME,
                                      busy_timeout_s=cfg.store.busy_timeout_s)
        try:
            await store.open()
        except BaseException:
            await store.close()
            raise
        self.notifications = Notifications(store, cfg.notify, cfg.server.base_url,
                                           wake=self.outbox.wake)
        await self.notifications.load()
        self.outbox.add_channel(NotifyChannel(store, on_outcome=self.metrics.count_notification))
        notify.install(self.notifications)

    async def _trigger_error(self, trigger: str, script: str, error: str) -> None:
        await self.notifications.emit("trigger.error", {"trigger": trigger, "scriptId": script,
                                                        "error": error})

    async def _report_abandoned(self, job_id: str, report: dict[str, Any]) -> None:
        job = await self.runner.get(job_id) if hasattr(self, "runner") else \
            await self.store.get(job_id)
        await self.notifications.report_abandoned(job, job_id, report)

    def _services(self, cfg: Config, backends: _Backends) -> Services:
        return Services(secrets=backends.secrets, vfs=backends.vfs, outbox=self.outbox,
                        http_ca_file=cfg.http.ca_file, http_timeout_s=cfg.http.timeout_s)

    def _api_keys(self, cfg: Config) -> list[ApiKeyConfig]:
        if cfg.api_keys:
            return list(cfg.api_keys)
        key_cfg, clear = load_or_create_generated(cfg.paths.state_dir)
        if clear is not None:
            hand_over_initial_key(cfg.paths.state_dir, clear, sys.stdout)
        return [key_cfg]

    async def _serve(self, cfg: Config, cert: Path) -> None:
        self.state = ApiState(self.runner, KeyRing(self._api_keys(cfg)),
                              metrics_open=cfg.metrics.open, outbox=self.outbox,
                              metrics=self.metrics.render, started_at=time.time(),
                              throughput=self.throughput, triggers=self.triggers,
                              host_tags=None if cfg.store.fleet else tuple(cfg.host.tags))
        self._configure_console(cfg.console)
        app = build_app(self.state, cfg.server, [http_metrics_middleware(self.metrics)])
        add_console(app)
        await self.web.start(app)
        log.info("api_listening", url=f"https://{_fmt_host(cfg.server.host)}:{cfg.server.port}",
                 tls_cert=str(cert), version=__version__, config=cfg.source)

    def _configure_console(self, cfg: ConsoleConfig) -> None:
        """Sessions live in memory: turning the console off (a reload) signs everyone out."""
        if not cfg.enabled:
            self.state.sessions = None
        elif self.state.sessions is None:
            self.state.sessions = SessionStore(cfg.session_ttl_s, cfg.max_sessions)
        else:
            self.state.sessions.configure(cfg.session_ttl_s, cfg.max_sessions)

    def _wire_metrics(self) -> None:
        progress.add_transfer_observer(self._on_transfer)
        progress.add_bytes_observer(self.throughput.add)
        # Both sources answer from memory: a scrape never waits on the database.
        self.metrics.register_job_state_source(self.store.counts)
        self.metrics.register_queue_source(
            lambda: (self.runner.queued_count, self.runner.running_count))
        self.metrics.register_outbox_source(self.outbox.depth)
        self.metrics.register_trigger_pending_source(self.triggers.pending_files)

    def _on_transfer(self, src_vfs: str, dst_vfs: str, files: int, nbytes: int, ok: bool) -> None:
        if ok:
            self.metrics.count_transfer(src_vfs, dst_vfs, files, nbytes)
        else:
            self.metrics.count_transfer_error(src_vfs, dst_vfs)

    def _on_report_outcome(self, outcome: str) -> None:
        if outcome == "delivered":
            self.metrics.count_report_delivered()
        else:
            self.metrics.count_report_failure()

    def _count_job_end(self, job: Job) -> None:
        self.metrics.observe_job_finished(job.script_id, str(job.status),
                                          job.duration_s(job.finished_at or time.time()) or 0.0)

    async def _release_reports(self, job: Job) -> None:
        # A store error here is retried by the runner until the intents are released.
        await self.outbox.release_job(job.id)

    # -- running -------------------------------------------------------------------------------
    def _healthy(self) -> bool:
        return self._store_ok

    async def _ping_loop(self) -> None:
        """Keep the watchdog's view of the store fresh without blocking the loop on it."""
        while True:
            try:
                ok = await asyncio.wait_for(self.store.ping(), STORE_PING_TIMEOUT_S)
            except TimeoutError:
                ok = False
            if ok != self._store_ok:
                (log.info if ok else log.error)("store_health", ok=ok)
            self._store_ok = ok
            await asyncio.sleep(STORE_PING_INTERVAL_S)

    def _status_text(self) -> str:
        return (f"{self.runner.running_count} running, {self.runner.queued_count} queued, "
                f"{self.outbox.depth()} reports pending")

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(STATUS_INTERVAL_S)
            self.notifier.status(self._status_text())

    async def _prune_loop(self) -> None:
        while True:
            days = self.config.jobs.retention_days
            if days > 0:
                horizon = time.time() - days * 86400
                try:
                    n = await self.store.prune(horizon)
                    if n:
                        log.info("jobs_pruned", count=n, retention_days=days)
                    await self.outbox.prune(horizon)
                    await self.notifications.store.prune(horizon)
                except (sqlite3.Error, OSError) as exc:
                    log.warning("prune_failed", error=str(exc))
            await asyncio.sleep(PRUNE_INTERVAL_S)

    # -- signals -------------------------------------------------------------------------------
    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.reload()))

    def _on_stop_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        if self._signals > 1:
            log.warning("forced_exit", signal=sig.name)
            sys.stdout.flush()
            os._exit(1)
        log.info("shutdown_requested", signal=sig.name)
        self._stop.set()

    # -- reload --------------------------------------------------------------------------------
    async def reload(self) -> bool:
        """SIGHUP: apply a new config to later jobs; a bad config leaves the old one in force."""
        if self.config_path is None:
            log.warning("reload_ignored", reason="running on embedded defaults (no --config)")
            return False
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            log.error("reload_refused", error=str(exc))
            return False
        self.notifier.reloading()
        try:
            await self._apply(new)
        except AftdError as exc:
            log.error("reload_refused", error=str(exc))
            return False
        finally:
            self.notifier.ready(self._status_text())
        return True

    async def _apply(self, new: Config) -> None:
        old = self.config
        backends = await _build_backends(new, self.metrics)
        for what in _restart_only(old, new):
            log.warning("reload_needs_restart", setting=what)
        configure_logging(new.logging.level, new.logging.format)
        executors.configure(new.executors)
        retired, self.backends = self.backends, backends
        self.outbox.use_secrets(backends.secrets)
        self.notifications.configure(new.notify)
        self.workers.configure(new.scripts, new.logging.level)
        self.loopwatch.threshold_s = new.jobs.loop_block_warn_s
        self.loopwatch.scripts_dir = new.paths.scripts_dir
        self.runner.reconfigure(ScriptLoader(new.paths.scripts_dir),
                                self._services(new, backends), new.jobs)
        self.state.keyring = KeyRing(self._api_keys(new))
        self.state.metrics_open = new.metrics.open
        self._configure_console(new.console)
        self.config = new
        changed_vfs = {n for n, c in old.vfs.items() if new.vfs.get(n) != c}
        await self.triggers.apply(new.triggers, changed_vfs)
        self._tasks.append(asyncio.create_task(self._retire(retired), name="aftd-retire"))
        log.info("config_reloaded", config=new.source)

    async def _retire(self, backends: _Backends) -> None:
        """Close the old backends once the jobs that started with them have finished."""
        waiting = self.runner.running_tasks()
        if waiting:
            await asyncio.wait(waiting)
        await backends.aclose()

    # -- shutdown ------------------------------------------------------------------------------
    async def _shutdown(self) -> None:
        """Bounded: grace + CANCEL_WAIT_S + STORE_FLUSH_S + OUTBOX_FLUSH_S + WEB_SHUTDOWN_S +
        BACKENDS_CLOSE_S at most (README, "Stopping"); the unit's TimeoutStopSec covers it."""
        self.notifier.stopping()
        log.info("shutting_down", running=self.runner.running_count,
                 grace_s=self.config.jobs.shutdown_grace_s)
        # Fires not submitted yet stay claimed in the store and are submitted after restart.
        await _bounded("triggers", self.triggers.stop(), TRIGGERS_STOP_S)
        await self.runner.drain(self.config.jobs.shutdown_grace_s, CANCEL_WAIT_S)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._close_parts()
        log.info("stopped")

    async def _close_parts(self) -> None:
        if hasattr(self, "workers"):
            await self.workers.aclose()
        if hasattr(self, "outbox"):
            await _bounded("outbox", self.outbox.aclose(flush_timeout_s=OUTBOX_FLUSH_S),
                           OUTBOX_FLUSH_S + 5)
        if hasattr(self, "notifications"):
            notify.install(None)
            await _bounded("notifications", self.notifications.store.close(), BACKENDS_CLOSE_S)
        if hasattr(self, "web"):
            await _bounded("web", self.web.close(), WEB_SHUTDOWN_S + 1)
        if hasattr(self, "backends"):
            await _bounded("backends", self.backends.aclose(), BACKENDS_CLOSE_S)
        if hasattr(self, "triggers"):
            await _bounded("triggers", self.triggers.stop(), TRIGGERS_STOP_S)
        if hasattr(self, "trigger_store"):
            await _bounded("trigger store", self.trigger_store.close(), BACKENDS_CLOSE_S)
        if hasattr(self, "fleet_agent"):
            await _bounded("fleet", self.fleet_agent.stop(), BACKENDS_CLOSE_S)
        if hasattr(self, "stores"):
            await _bounded("store", self.stores.close(), BACKENDS_CLOSE_S)
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        executors.shutdown()
        self.loopwatch.stop()
        self.notifier.close()


async def _bounded(what: str, aw: Awaitable[None], timeout_s: float) -> None:
    try:
        await asyncio.wait_for(aw, timeout_s)
    except TimeoutError:
        log.error("shutdown_step_timed_out", step=what, timeout_s=timeout_s)
    except Exception as exc:
        log.error("shutdown_step_failed", step=what, error=f"{type(exc).__name__}: {exc}")


def _startup_cause(exc: BaseException) -> str:
    """One line naming what failed, without a traceback."""
    if isinstance(exc, AftdError):
        return str(exc)
    if isinstance(exc, sqlite3.Error | StoreError):
        return f"cannot open the job store: {exc}"
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror or exc}{where}"
    return f"{type(exc).__name__}: {exc}"


async def _build_backends(cfg: Config, metrics: Metrics) -> _Backends:
    def on_lookup(_name: str, provider: str | None) -> None:
        if provider:
            metrics.count_secret_lookup(provider)
        else:
            metrics.count_secret_failure()

    secrets = SecretChain(cfg.secrets, on_lookup=on_lookup)
    await secrets.start()
    return _Backends(secrets=secrets, vfs=VfsPool(cfg.vfs, secrets))


def _restart_only(old: Config, new: Config) -> list[str]:
    checks = {"server": old.server != new.server, "paths.state_dir":
              old.paths.state_dir != new.paths.state_dir, "reports": old.reports != new.reports,
              "store": old.store != new.store, "host": old.host != new.host}
    return [k for k, changed in checks.items() if changed]


def _fmt_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def serve(config_path: str | None, log_format: str | None = None) -> int:
    """Entry point of ``aftd serve``."""
    if config_path is not None:
        # Absolute from here on: a script's os.chdir() must not break a later SIGHUP.
        config_path = os.path.abspath(config_path)
    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        configure_logging("info", log_format or "json")
        log.error("startup_failed", error=f"config error: {exc}")
        return 2
    configure_logging(cfg.logging.level, log_format or cfg.logging.format)
    # Scripts' print/stderr/warnings go to their job's log, scrubbed (see aftd/stdio.py).
    with routed_stdio():
        loop = asyncio.new_event_loop()
        try:
            rc = loop.run_until_complete(Daemon(cfg, config_path).run())
        except KeyboardInterrupt:
            rc = 1
        clean = _close_loop(loop)
    if not clean:
        # Something ignored cancellation or a worker thread is stuck: exit anyway, bounded.
        sys.stdout.flush()
        os._exit(rc)
    return rc


def _close_loop(loop: asyncio.AbstractEventLoop) -> bool:
    """Like the end of ``asyncio.run`` but bounded; False when something would not stop."""
    clean = True
    try:
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        if tasks:
            _, pending = loop.run_until_complete(asyncio.wait(tasks, timeout=LOOP_CLOSE_S))
            clean = not pending
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(asyncio.wait_for(loop.shutdown_default_executor(),
                                                 LOOP_CLOSE_S))
    except (TimeoutError, RuntimeError):
        clean = False
    if clean:
        loop.close()
    return clean and not _stuck_threads()


def _stuck_threads() -> bool:
    deadline = time.monotonic() + LOOP_CLOSE_S
    for thread in threading.enumerate():
        if thread is threading.main_thread() or thread.daemon:
            continue
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            return True
    return False
