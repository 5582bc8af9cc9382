"""Prometheus metrics for aftd: one private registry, helper functions, an aiohttp middleware.

Metric names are a contract with operators' dashboards and alerts; do not rename them.
Callers use the helpers below (``observe_job_finished``, ``count_transfer`` ...) and never touch
label plumbing. Values that describe live state (jobs by state, queue depth, running jobs,
outbox depth) are read through callbacks the daemon registers, so they are exact at scrape
time instead of being as fresh as the last update someone remembered to make.

The registry is our own ``CollectorRegistry``, not prometheus_client's global one: importing a
library that registers into the global registry cannot add series to ``/metrics``, and tests can
build a fresh :class:`Metrics` each.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TypeVar

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from aftd import __version__

__all__ = [
    "JOB_STATES",
    "Metrics",
    "add_loop_blocked_seconds",
    "count_http_request",
    "count_loop_block",
    "count_report_delivered",
    "count_report_failure",
    "count_secret_failure",
    "count_secret_lookup",
    "count_transfer",
    "count_transfer_error",
    "default_metrics",
    "http_metrics_middleware",
    "metrics_handler",
    "observe_job_finished",
    "register_job_state_source",
    "register_outbox_source",
    "register_queue_source",
    "render",
    "set_outbox_depth",
    "set_queue",
    "set_sftp_fast_path",
]

log = structlog.get_logger(__name__)

JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled", "interrupted")

# Transfer jobs run from sub-second to hours; buckets span that range.
_JOB_BUCKETS = (0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, float("inf"))
# API calls should be milliseconds; the long tail is log streaming and slow disks.
_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, float("inf"))
# Anything else would let a client mint label values (one series each) by sending odd verbs.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# Watch poll durations: a local directory lists in milliseconds, a big remote one in seconds.
_POLL_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, float("inf"))

JobStateSource = Callable[[], Mapping[str, int]]
PendingSource = Callable[[], Mapping[str, int]]
QueueSource = Callable[[], tuple[int, int]]
OutboxSource = Callable[[], int]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_T = TypeVar("_T")


class _LiveState:
    """Collector for gauges of live state, read from the daemon's callbacks at scrape time.

    Without a callback it reports the last value given to ``set_queue``/``set_outbox_depth``.
    A callback that raises drops its family from that scrape (logged) instead of failing the
    whole scrape: one broken source must not blind monitoring to everything else.
    """

    def __init__(self) -> None:
        self.job_states: JobStateSource | None = None
        self.queue: QueueSource | None = None
        self.outbox: OutboxSource | None = None
        self.pending: PendingSource | None = None
        self.queued = 0
        self.running = 0
        self.outbox_depth = 0

    def describe(self) -> Iterable[Metric]:
        # Lets the registry reject a duplicate name at registration, without calling sources.
        yield GaugeMetricFamily("aftd_jobs", "", labels=["state"])
        for name in ("aftd_queue_depth", "aftd_jobs_running", "aftd_outbox_depth"):
            yield GaugeMetricFamily(name, "")
        yield GaugeMetricFamily("aftd_trigger_files_pending", "", labels=["trigger"])

    def collect(self) -> Iterable[Metric]:
        yield from self._jobs()
        yield from self._queue()
        yield from self._outbox()
        yield from self._pending()

    def _pending(self) -> Iterable[Metric]:
        if self.pending is None:
            return
        counts = _call("trigger_files_pending", self.pending)
        if counts is None:
            return
        family = GaugeMetricFamily("aftd_trigger_files_pending", "Files a watch trigger has "
                                   "seen but that are not stable yet.", labels=["trigger"])
        for trigger, n in sorted(counts.items()):
            family.add_metric([trigger], float(n))
        yield family

    def _jobs(self) -> Iterable[Metric]:
        if self.job_states is None:
            return
        counts = _call("job_states", self.job_states)
        if counts is None:
            return
        family = GaugeMetricFamily("aftd_jobs", "Jobs in the store by state.", labels=["state"])
        # Every known state is always present so that absent() alerts and rate() work.
        for state in dict.fromkeys((*JOB_STATES, *counts)):
            family.add_metric([state], float(counts.get(state, 0)))
        yield family

    def _queue(self) -> Iterable[Metric]:
        queued, running = self.queued, self.running
        if self.queue is not None:
            values = _call("queue", self.queue)
            if values is None:
                return
            queued, running = values
        yield GaugeMetricFamily("aftd_queue_depth", "Jobs waiting for a run slot.", queued)
        yield GaugeMetricFamily("aftd_jobs_running", "Jobs running now.", running)

    def _outbox(self) -> Iterable[Metric]:
        depth: int | None = self.outbox_depth
        if self.outbox is not None:
            depth = _call("outbox", self.outbox)
        if depth is not None:
            yield GaugeMetricFamily(
                "aftd_outbox_depth", "Reports waiting for delivery to the orchestrator.", depth
            )


def _call(name: str, source: Callable[[], _T]) -> _T | None:
    try:
        return source()
    except Exception as exc:
        log.warning("metrics_source_failed", source=name, error=f"{type(exc).__name__}: {exc}")
        return None


class Metrics:
    """Every aftd metric, registered in its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._live = _LiveState()
        self.registry.register(self._live)
        self._define_jobs()
        self._define_transfers()
        self._define_reports_and_secrets()
        self._define_http()
        self._define_loop()
        self._define_triggers()
        self.sftp_fast_path = Gauge(
            "aftd_sftp_fast_path", "1 when an asyncssh speed-up (patch) runs, 0 when it was "
            "skipped or failed its self-test (asyncssh's own code runs instead).",
            ["patch"], registry=self.registry,
        )  # fmt: skip
        info = Info("aftd_build", "Build information.", registry=self.registry)
        info.info({"version": __version__})

    def _define_jobs(self) -> None:
        self.job_duration = Histogram(
            "aftd_job_duration_seconds", "Job run time from start to final state, by script.",
            ["script"], buckets=_JOB_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.jobs_finished = Counter(
            "aftd_jobs_finished", "Jobs that reached a final state.",
            ["script", "state"], registry=self.registry,
        )  # fmt: skip

    def _define_transfers(self) -> None:
        labels = ["src_vfs", "dst_vfs"]
        self.transfer_bytes = Counter(
            "aftd_transfer_bytes", "Bytes copied between VFS.", labels, registry=self.registry
        )
        self.transfer_files = Counter(
            "aftd_transfer_files", "Files copied between VFS.", labels, registry=self.registry
        )
        self.transfer_errors = Counter(
            "aftd_transfer_errors", "Failed copies between VFS.", labels, registry=self.registry
        )

    def _define_reports_and_secrets(self) -> None:
        self.reports_delivered = Counter(
            "aftd_reports_delivered", "Reports delivered to the orchestrator.",
            registry=self.registry,
        )  # fmt: skip
        self.report_failures = Counter(
            "aftd_report_delivery_failures", "Failed report delivery attempts (retried later).",
            registry=self.registry,
        )  # fmt: skip
        self.notifications = Counter(
            "aftd_notifications", "Attempts to deliver pushed notifications, by [[notify]] "
            "entry and outcome (delivered, retry, abandoned).",
            ["notify", "outcome"], registry=self.registry,
        )  # fmt: skip
        self.secret_lookups = Counter(
            "aftd_secret_lookups", "Secret lookups answered, by provider.",
            ["provider"], registry=self.registry,
        )  # fmt: skip
        self.secret_failures = Counter(
            "aftd_secret_failures", "Secret lookups that failed in every provider.",
            registry=self.registry,
        )  # fmt: skip

    def _define_http(self) -> None:
        self.http_requests = Counter(
            "aftd_http_requests", "API requests by route template, method and status.",
            ["route", "method", "status"], registry=self.registry,
        )  # fmt: skip
        self.http_duration = Histogram(
            "aftd_http_request_duration_seconds", "API request handling time by route template.",
            ["route"], buckets=_HTTP_BUCKETS, registry=self.registry,
        )  # fmt: skip

    def _define_loop(self) -> None:
        self.loop_blocks = Counter(
            "aftd_event_loop_blocked", "Stalls of the event loop longer than "
            "jobs.loop_block_warn_s, by the script whose code was running (empty: none).",
            ["script"], registry=self.registry,
        )  # fmt: skip
        self.loop_blocked_seconds = Counter(
            "aftd_event_loop_blocked_seconds", "Time the event loop spent in those stalls.",
            registry=self.registry,
        )  # fmt: skip

    def _define_triggers(self) -> None:
        self.trigger_fires = Counter(
            "aftd_trigger_fires", "Jobs submitted by triggers (schedules and watches).",
            ["trigger"], registry=self.registry,
        )  # fmt: skip
        self.trigger_errors = Counter(
            "aftd_trigger_errors", "Trigger failures: a failed poll, a fire that could not be "
            "submitted, a failed after step.", ["trigger"], registry=self.registry,
        )  # fmt: skip
        self.watch_poll_duration = Histogram(
            "aftd_watch_poll_duration_seconds", "Time a watch trigger takes to list its "
            "directory.", ["trigger"], buckets=_POLL_BUCKETS, registry=self.registry,
        )  # fmt: skip

    # -- live-state sources (set by the daemon) -------------------------------------------

    def register_job_state_source(self, fn: JobStateSource | None) -> None:
        """``fn()`` returns ``{state: count}`` for jobs in the store; called at every scrape."""
        self._live.job_states = fn

    def register_queue_source(self, fn: QueueSource | None) -> None:
        """``fn()`` returns ``(queued, running)``; overrides :meth:`set_queue`."""
        self._live.queue = fn

    def register_outbox_source(self, fn: OutboxSource | None) -> None:
        """``fn()`` returns the count of undelivered reports; overrides :meth:`set_outbox_depth`."""
        self._live.outbox = fn

    def register_trigger_pending_source(self, fn: PendingSource | None) -> None:
        """``fn()`` returns ``{trigger: files waiting for stability}`` for watch triggers."""
        self._live.pending = fn

    def set_queue(self, queued: int, running: int) -> None:
        self._live.queued, self._live.running = queued, running

    def set_outbox_depth(self, n: int) -> None:
        self._live.outbox_depth = n

    # -- events -------------------------------------------------------------------------

    def observe_job_finished(self, script: str, state: str, duration_s: float) -> None:
        self.jobs_finished.labels(script, state).inc()
        self.job_duration.labels(script).observe(max(duration_s, 0.0))

    def count_transfer(self, src: str, dst: str, files: int, nbytes: int) -> None:
        self.transfer_files.labels(src, dst).inc(files)
        self.transfer_bytes.labels(src, dst).inc(nbytes)

    def count_transfer_error(self, src: str, dst: str) -> None:
        self.transfer_errors.labels(src, dst).inc()

    def count_report_delivered(self) -> None:
        self.reports_delivered.inc()

    def count_report_failure(self) -> None:
        self.report_failures.inc()

    def count_notification(self, notify: str, outcome: str) -> None:
        self.notifications.labels(notify, outcome).inc()

    def count_secret_lookup(self, provider: str) -> None:
        self.secret_lookups.labels(provider).inc()

    def count_secret_failure(self) -> None:
        self.secret_failures.inc()

    def count_http_request(self, route: str, method: str, status: int, duration_s: float) -> None:
        method = method if method in _METHODS else "other"
        self.http_requests.labels(route, method, str(status)).inc()
        self.http_duration.labels(route).observe(max(duration_s, 0.0))

    def count_loop_block(self, script: str | None) -> None:
        """A stall of the event loop passed the threshold while ``script`` ran (if known)."""
        self.loop_blocks.labels(script or "").inc()

    def add_loop_blocked_seconds(self, seconds: float) -> None:
        """A stall ended after ``seconds``."""
        self.loop_blocked_seconds.inc(max(seconds, 0.0))

    def count_trigger_fire(self, trigger: str) -> None:
        self.trigger_fires.labels(trigger).inc()

    def count_trigger_error(self, trigger: str) -> None:
        self.trigger_errors.labels(trigger).inc()

    def observe_watch_poll(self, trigger: str, seconds: float) -> None:
        self.watch_poll_duration.labels(trigger).observe(max(seconds, 0.0))

    def set_sftp_fast_path(self, patch: str, on: bool) -> None:
        """Whether the asyncssh speed-up ``patch`` runs (last connection that tried it)."""
        self.sftp_fast_path.labels(patch).set(1 if on else 0)

    # -- exposition -----------------------------------------------------------------------

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition body and its Content-Type, negotiated from an ``Accept`` header.

        Without one: the classic text format 0.0.4, which every Prometheus version scrapes.
        """
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


default_metrics = Metrics()
"""The process-wide instance that the module-level helpers use."""

register_job_state_source = default_metrics.register_job_state_source
register_queue_source = default_metrics.register_queue_source
register_outbox_source = default_metrics.register_outbox_source
set_queue = default_metrics.set_queue
set_outbox_depth = default_metrics.set_outbox_depth
observe_job_finished = default_metrics.observe_job_finished
count_transfer = default_metrics.count_transfer
count_transfer_error = default_metrics.count_transfer_error
count_report_delivered = default_metrics.count_report_delivered
count_report_failure = default_metrics.count_report_failure
count_secret_lookup = default_metrics.count_secret_lookup
count_secret_failure = default_metrics.count_secret_failure
count_http_request = default_metrics.count_http_request
count_loop_block = default_metrics.count_loop_block
add_loop_blocked_seconds = default_metrics.add_loop_blocked_seconds
set_sftp_fast_path = default_metrics.set_sftp_fast_path
render = default_metrics.render


def route_label(request: web.Request) -> str:
    """The matched route's template (``/v1/jobs/{jobId}``), never the raw path."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def http_metrics_middleware(metrics: Metrics | None = None) -> Middleware:
    """aiohttp middleware counting requests; put it FIRST in ``middlewares`` (outermost) so it
    sees the status that error-to-JSON and auth middlewares finally produce."""
    target = default_metrics if metrics is None else metrics

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.monotonic()
        status = 500  # an exception that is not an HTTP answer becomes a 500 for the client
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            elapsed = time.monotonic() - started
            target.count_http_request(route_label(request), request.method, status, elapsed)

    return middleware


def metrics_handler(metrics: Metrics | None = None) -> Handler:
    """An aiohttp handler serving the exposition (auth is the caller's business)."""
    target = default_metrics if metrics is None else metrics

    async def handler(request: web.Request) -> web.Response:
        body, content_type = target.render(request.headers.get("Accept"))
        response = web.Response(body=body)
        # Set the header verbatim: it carries a version parameter aiohttp's content_type drops.
        response.headers["Content-Type"] = content_type
        return response

    return handler
