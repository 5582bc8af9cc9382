"""Feeding the daemon's metrics: observers of transfers, report deliveries and job ends, and the
live sources a scrape reads (each answers from memory: a scrape never waits on the database)."""

from __future__ import annotations

import time

from aftd import progress
from aftd.jobs.model import Job
from aftd.jobs.runner import Runner
from aftd.jobs.storage import JobStorage
from aftd.metrics import Metrics
from aftd.report.outbox import Outbox
from aftd.throughput import ThroughputRing
from aftd.triggers.manager import TriggerManager

__all__ = ["MetricsFeed"]


class MetricsFeed:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def wire(self, throughput: ThroughputRing, store: JobStorage, runner: Runner,
             outbox: Outbox, triggers: TriggerManager) -> None:
        progress.add_transfer_observer(self.on_transfer)
        progress.add_bytes_observer(throughput.add)
        self.metrics.register_job_state_source(store.counts)
        self.metrics.register_queue_source(lambda: (runner.queued_count, runner.running_count))
        self.metrics.register_outbox_source(outbox.depth)
        self.metrics.register_trigger_pending_source(triggers.pending_files)

    def on_transfer(self, src_vfs: str, dst_vfs: str, files: int, nbytes: int, ok: bool) -> None:
        if ok:
            self.metrics.count_transfer(src_vfs, dst_vfs, files, nbytes)
        else:
            self.metrics.count_transfer_error(src_vfs, dst_vfs)

    def on_report_outcome(self, outcome: str) -> None:
        if outcome == "delivered":
            self.metrics.count_report_delivered()
        else:
            self.metrics.count_report_failure()

    def count_job_end(self, job: Job) -> None:
        self.metrics.observe_job_finished(job.script_id, str(job.status),
                                          job.duration_s(job.finished_at or time.time()) or 0.0)
