"""The daemon's lifecycle: start-up -> serve -> reload -> graceful shutdown.

All signal handling lives here. Start-up order matters: the store and the outbox are open and
interrupted jobs are settled before the API listens, and READY=1 is sent only after that.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from dataclasses import dataclass

import structlog
from aiohttp import web

from aftd import __version__, progress
from aftd.api.app import build_app
from aftd.api.state import ApiState
from aftd.apikeys import KeyRing, load_or_create_generated
from aftd.config import ApiKeyConfig, Config, load_config
from aftd.errors import AftdError, ConfigError
from aftd.jobs.model import Job
from aftd.jobs.runner import Runner
from aftd.jobs.store import JobStore
from aftd.logging import configure_logging
from aftd.metrics import Metrics, http_metrics_middleware
from aftd.report.outbox import Outbox
from aftd.scripts.context import Services
from aftd.scripts.loader import ScriptLoader
from aftd.sdnotify import Notifier, watchdog_loop
from aftd.secrets.chain import SecretChain
from aftd.tls import ensure_self_signed, server_context
from aftd.vfs.registry import VfsPool

__all__ = ["Daemon", "serve"]

log = structlog.get_logger("aftd.daemon")

DB_NAME = "aftd.sqlite"
STATUS_INTERVAL_S = 2.0
PRUNE_INTERVAL_S = 3600.0


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
        self.notifier = Notifier.from_env()
        self.metrics = Metrics()
        self._stop = asyncio.Event()
        self._signals = 0
        self._tasks: list[asyncio.Task[None]] = []

    # -- start-up ------------------------------------------------------------------------------
    async def run(self) -> int:
        try:
            await self._start()
        except (AftdError, OSError) as exc:
            log.error("startup_failed", error=str(exc))
            await self._close_parts()
            return 1
        self._install_signals()
        await self._stop.wait()
        await self._shutdown()
        return 0

    async def _start(self) -> None:
        cfg = self.config
        state_dir = cfg.paths.state_dir
        # Others may traverse (to read the public certificate) but not list the state dir.
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o711)
        self.store = JobStore(state_dir / DB_NAME)
        self.backends = await _build_backends(cfg, self.metrics)
        self.outbox = Outbox(state_dir / DB_NAME, cfg.reports, self.backends.secrets,
                             ca_file=cfg.http.ca_file, on_outcome=self._on_report_outcome)
        await self.outbox.start()
        self.runner = Runner(self.store, ScriptLoader(cfg.paths.scripts_dir),
                             self._services(cfg, self.backends), cfg.jobs)
        self.runner.add_end_hook(self._on_job_end)
        self.runner.start()
        self.outbox.release_all_intents()  # nothing runs yet: every open intent is orphaned
        self._wire_metrics()
        self.state = ApiState(self.runner, KeyRing(self._api_keys(cfg)),
                              metrics_open=cfg.metrics.open, outbox=self.outbox,
                              metrics=self.metrics.render, started_at=time.time())
        await self._listen(cfg)
        self._tasks = [asyncio.create_task(c, name=n) for n, c in (
            ("aftd-watchdog", watchdog_loop(self.notifier, self._healthy)),
            ("aftd-status", self._status_loop()),
            ("aftd-prune", self._prune_loop()),
        )]
        self.notifier.ready(self._status_text())

    def _services(self, cfg: Config, backends: _Backends) -> Services:
        return Services(secrets=backends.secrets, vfs=backends.vfs, outbox=self.outbox,
                        http_ca_file=cfg.http.ca_file, http_timeout_s=cfg.http.timeout_s)

    def _api_keys(self, cfg: Config) -> list[ApiKeyConfig]:
        if cfg.api_keys:
            return list(cfg.api_keys)
        key_cfg, clear = load_or_create_generated(cfg.paths.state_dir)
        if clear is not None:
            # Shown once, on the terminal only: the daemon keeps nothing but its SHA-256.
            print(f"aftd: generated API key (shown once; only its SHA-256 is stored): {clear}",
                  flush=True)
        return [key_cfg]

    async def _listen(self, cfg: Config) -> None:
        cert, key = cfg.server.tls_cert, cfg.server.tls_key
        if cert is None or key is None:
            cert, key = ensure_self_signed(cfg.paths.state_dir)
        app = build_app(self.state, cfg.server.max_body_bytes,
                        [http_metrics_middleware(self.metrics)])
        # A short keep-alive: every idle TLS connection holds ~256 KiB of buffers.
        self.web = web.AppRunner(app, access_log=None, handle_signals=False,
                                 keepalive_timeout=15.0)
        await self.web.setup()
        site = web.TCPSite(self.web, cfg.server.host, cfg.server.port,
                           ssl_context=server_context(cert, key), shutdown_timeout=5.0)
        try:
            await site.start()
        except OSError as exc:
            raise AftdError(f"cannot listen on {cfg.server.host}:{cfg.server.port}: "
                            f"{exc.strerror or exc}") from None
        log.info("api_listening", url=f"https://{_fmt_host(cfg.server.host)}:{cfg.server.port}",
                 tls_cert=str(cert), version=__version__, config=cfg.source)

    def _wire_metrics(self) -> None:
        progress.add_transfer_observer(self._on_transfer)
        self.metrics.register_job_state_source(self.store.counts)
        self.metrics.register_queue_source(
            lambda: (self.runner.queued_count, self.runner.running_count))
        self.metrics.register_outbox_source(self.outbox.depth)

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

    def _on_job_end(self, job: Job) -> None:
        self.outbox.release_job(job.id)
        self.metrics.observe_job_finished(job.script_id, str(job.status),
                                          job.duration_s(job.finished_at or time.time()) or 0.0)

    # -- running -------------------------------------------------------------------------------
    def _healthy(self) -> bool:
        return self.store.ping()

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
                n = self.store.prune(horizon)
                if n:
                    log.info("jobs_pruned", count=n, retention_days=days)
                self.outbox.prune(horizon)
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
        retired, self.backends = self.backends, backends
        self.outbox.use_secrets(backends.secrets)
        self.runner.reconfigure(ScriptLoader(new.paths.scripts_dir),
                                self._services(new, backends), new.jobs)
        self.state.keyring = KeyRing(self._api_keys(new))
        self.state.metrics_open = new.metrics.open
        self.config = new
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
        self.notifier.stopping()
        log.info("shutting_down", running=self.runner.running_count,
                 grace_s=self.config.jobs.shutdown_grace_s)
        await self.runner.drain(self.config.jobs.shutdown_grace_s)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._close_parts()
        log.info("stopped")

    async def _close_parts(self) -> None:
        if hasattr(self, "outbox"):
            await self.outbox.aclose(flush_timeout_s=5.0)
        if hasattr(self, "web"):
            await self.web.cleanup()
        if hasattr(self, "backends"):
            await self.backends.aclose()
        if hasattr(self, "store"):
            self.store.close()
        self.notifier.close()


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
              old.paths.state_dir != new.paths.state_dir, "reports": old.reports != new.reports}
    return [k for k, changed in checks.items() if changed]


def _fmt_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def serve(config_path: str | None, log_format: str | None = None) -> int:
    """Entry point of ``aftd serve``."""
    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        print(f"aftd: config error: {exc}", file=sys.stderr)
        return 2
    configure_logging(cfg.logging.level, log_format or cfg.logging.format)
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(Daemon(cfg, config_path).run())
    return 1
