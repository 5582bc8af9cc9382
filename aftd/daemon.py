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
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from aftd import __version__, executors, notify
from aftd.api.app import build_app
from aftd.api.server import ApiServer
from aftd.api.state import ApiState
from aftd.apikeys import KeyRing, hand_over_initial_key, load_or_create_generated
from aftd.authconfig import ApiKeyConfig
from aftd.config import Config, ConsoleConfig, load_config
from aftd.console import add_console
from aftd.errors import AftdError, ConfigError
from aftd.fleethost import announce_taken_over, notify_store, start_agent, trigger_store
from aftd.housekeeping import StoreHealth, prune_loop, status_loop
from aftd.jobs.model import Job
from aftd.jobs.runner import CANCEL_WAIT_S, Runner
from aftd.jobs.triggering import RunnerPort
from aftd.logging import configure_logging
from aftd.loopwatch import LoopWatch
from aftd.metrics import Metrics, http_metrics_middleware
from aftd.metricsfeed import MetricsFeed
from aftd.notify.channel import NotifyChannel
from aftd.notify.service import Notifications
from aftd.reloading import Backends, build_backends, restart_only
from aftd.report.outbox import Outbox
from aftd.scripts.context import Services
from aftd.scripts.isolation import WorkerPool
from aftd.scripts.loader import ScriptLoader
from aftd.sdnotify import Notifier, watchdog_loop
from aftd.sessions import SessionStore
from aftd.shutdown import (
    BACKENDS_CLOSE_S,
    OUTBOX_FLUSH_S,
    TRIGGERS_STOP_S,
    WEB_SHUTDOWN_S,
    bounded,
    close_loop,
)
from aftd.statelock import StateLock
from aftd.stdio import routed_stdio
from aftd.store.errors import StoreError
from aftd.store.factory import DB_NAME, open_stores
from aftd.throughput import ThroughputRing
from aftd.tls import ensure_self_signed, server_context
from aftd.triggers.base import TriggerContext
from aftd.triggers.firing import Firing
from aftd.triggers.follow import follow_pauses
from aftd.triggers.manager import TriggerManager
from aftd.triggers.store import TriggerStore
from aftd.vfs.base import Vfs

if TYPE_CHECKING:
    from aftd.store.pg.hosts import Takeover

__all__ = ["Daemon", "serve"]

log = structlog.get_logger("aftd.daemon")

FOLLOW_PAUSES_S = 2.0  # a fleet host reads pauses made on other hosts this often


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
        self._health = StoreHealth()
        self._feed = MetricsFeed(self.metrics)
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
            ("aftd-watchdog", watchdog_loop(self.notifier, self._health.healthy)),
            ("aftd-status", status_loop(self.notifier, self._status_text)),
            ("aftd-prune", prune_loop(lambda: self.config.jobs.retention_days,
                                      self.store.prune, self.outbox.prune,
                                      self.notifications.store.prune)),
            ("aftd-store-ping", self._health.watch(self.store.ping)),
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
        self.backends = await build_backends(cfg, self.metrics)
        hint = f" --config {self.config_path}" if self.config_path else ""
        self.stores = await open_stores(cfg, self.backends.secrets, hint)
        self.store = self.stores.jobs
        self.outbox = Outbox(state_dir / DB_NAME, cfg.reports, self.backends.secrets,
                             ca_file=cfg.http.ca_file, on_outcome=self._feed.on_report_outcome,
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
        self.runner.add_end_hook(self._feed.count_job_end)
        self.runner.add_end_hook(self._release_reports)
        await self._open_triggers(trigger_store(self.stores.fleet, state_dir / DB_NAME, busy))
        self.runner.add_start_hook(self.notifications.job_started)
        self.runner.add_end_hook(self.notifications.job_ended)
        await self.runner.start()
        # After the runner announced the jobs it found interrupted: what is left are jobs
        # whose end was stored but not announced.
        await self.notifications.reconcile(self.store.get)
        if fleet is not None:
            self.fleet_agent = start_agent(fleet, self.runner, self._on_takeover)
        self._feed.wire(self.throughput, self.store, self.runner, self.outbox, self.triggers)

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
            self._tasks.append(asyncio.create_task(announce_taken_over(
                ids, self.runner, self.notifications, self.triggers, self.store.get),
                name="aftd-takeover-ends"))

    async def _open_notifications(self, cfg: Config, state_dir: Path) -> None:
        """The notification store and its channel in the outbox (README, "Notifications")."""
        store = notify_store(self.stores.fleet, state_dir / DB_NAME, cfg.store.busy_timeout_s)
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

    def _services(self, cfg: Config, backends: Backends) -> Services:
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

    async def _release_reports(self, job: Job) -> None:
        # A store error here is retried by the runner until the intents are released.
        await self.outbox.release_job(job.id)

    def _status_text(self) -> str:
        return (f"{self.runner.running_count} running, {self.runner.queued_count} queued, "
                f"{self.outbox.depth()} reports pending")

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
        backends = await build_backends(new, self.metrics)
        for what in restart_only(old, new):
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

    async def _retire(self, backends: Backends) -> None:
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
        await bounded("triggers", self.triggers.stop(), TRIGGERS_STOP_S)
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
            await bounded("outbox", self.outbox.aclose(flush_timeout_s=OUTBOX_FLUSH_S),
                           OUTBOX_FLUSH_S + 5)
        if hasattr(self, "notifications"):
            notify.install(None)
            await bounded("notifications", self.notifications.store.close(), BACKENDS_CLOSE_S)
        if hasattr(self, "web"):
            await bounded("web", self.web.close(), WEB_SHUTDOWN_S + 1)
        if hasattr(self, "backends"):
            await bounded("backends", self.backends.aclose(), BACKENDS_CLOSE_S)
        if hasattr(self, "triggers"):
            await bounded("triggers", self.triggers.stop(), TRIGGERS_STOP_S)
        if hasattr(self, "trigger_store"):
            await bounded("trigger store", self.trigger_store.close(), BACKENDS_CLOSE_S)
        if hasattr(self, "fleet_agent"):
            await bounded("fleet", self.fleet_agent.stop(), BACKENDS_CLOSE_S)
        if hasattr(self, "stores"):
            await bounded("store", self.stores.close(), BACKENDS_CLOSE_S)
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        executors.shutdown()
        self.loopwatch.stop()
        self.notifier.close()


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
        clean = close_loop(loop)
    if not clean:
        # Something ignored cancellation or a worker thread is stuck: exit anyway, bounded.
        sys.stdout.flush()
        os._exit(rc)
    return rc
