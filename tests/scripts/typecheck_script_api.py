"""Checked by mypy --strict from test_script_api.py (never run): the job API scripts are typed
against, ``aftd.script.Job``, is what the daemon hands them, inline and in a worker process."""

from __future__ import annotations

import socket

import structlog

from aftd.report.outbox import Outbox
from aftd.script import Job, Vfs
from aftd.scripts.context import JobContext, ReportOutbox, Services, VfsSource
from aftd.scripts.worker_api import Channel, RemoteOutbox, RemoteSecrets
from aftd.secrets.base import SecretResolver
from aftd.secrets.chain import SecretChain
from aftd.vfs.registry import VfsPool


def inline_job(ctx: JobContext) -> Job:
    """The runner's job context, as a script sees it."""
    return ctx


def daemon_services(secrets: SecretChain, outbox: Outbox, pool: VfsPool) -> Services:
    return Services(secrets=secrets, vfs=pool, outbox=outbox)


def worker_job(sock: socket.socket, pool: VfsPool) -> Job:
    """What a worker process builds (aftd/scripts/worker.py): the same context over the
    worker API's secrets and outbox, which answer through the daemon."""
    channel = Channel(sock)
    secrets: SecretResolver = RemoteSecrets(channel)
    outbox: ReportOutbox = RemoteOutbox(channel)
    vfs: VfsSource = pool
    services = Services(secrets=secrets, vfs=vfs, outbox=outbox)
    return JobContext("id", "script", {}, structlog.get_logger("aftd.job"), services)


async def uses_every_member(job: Job) -> int:
    """Each member of Job with the types a script relies on."""
    name: str = job.id + job.script_id + str(job.params.require("path", str))
    job.log.info("event", name=name)
    token: str = await job.secret("token")
    async with job.http("https://example.invalid", bearer=token) as api:
        ok: bool = (await api.post("/x", json={"a": 1}, timeout_s=5)).ok
    src: Vfs = job.vfs("a")
    result = await src.copy_to("p", job.vfs("b"), "d", overwrite="if_newer", verify="sha256",
                               include=["*.csv"], exclude=(), transfers=2,
                               follow_symlinks=True, on_error="continue")
    if job.outbox is None or not ok:
        job.exit(2)
    return result.files
