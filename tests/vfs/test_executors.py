"""Bounded executors: a secret lookup does not queue behind local tree copies."""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aftd import executors
from aftd.configmodel import Section
from aftd.errors import ConfigError
from aftd.secrets.base import parse_name
from aftd.secrets.file import FileProvider
from aftd.vfs.handle import VfsHandle
from aftd.vfs.local import LocalVfs
from tests.fixtures.daemon import Api

FILE_MIB = 4
FILES_PER_TREE = 32


@pytest.fixture
def one_file_io_thread() -> Iterator[executors.BoundedExecutor]:
    """A single file_io thread: two copies of four transfers each keep a queue in front of it."""
    executors.configure({executors.FILE_IO: 1})
    yield executors.get(executors.FILE_IO)
    executors.configure(executors.DEFAULT_SIZES)


async def timed(make: Callable[[], Awaitable[Any]]) -> float:
    start = time.perf_counter()
    await make()
    return time.perf_counter() - start


def trees(root: Path) -> None:
    blob = root / "blob"
    blob.write_bytes(os.urandom(1 << 20) * FILE_MIB)
    for t in ("t1", "t2"):
        (root / t).mkdir()
        for i in range(FILES_PER_TREE):
            os.link(blob, root / t / f"f{i:02d}.bin")  # one source file on disk, many names


@pytest.mark.slow
async def test_secret_lookup_completes_while_copies_saturate_file_io(
        tmp_path: Path, one_file_io_thread: executors.BoundedExecutor) -> None:
    pool = one_file_io_thread
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('token = "not-a-real-secret"\n')
    secrets.chmod(0o600)
    provider, name = FileProvider(secrets), parse_name("token")
    (tmp_path / "src").mkdir()
    (tmp_path / "dst").mkdir()
    trees(tmp_path / "src")
    src, dst = LocalVfs("src", str(tmp_path / "src")), LocalVfs("dst", str(tmp_path / "dst"))

    copies = [asyncio.create_task(VfsHandle(src).copy_to(t, dst, "", transfers=4)) for t in ("t1", "t2")]
    lookups: list[float] = []
    queue_waits: list[float] = []  # what any work submitted to file_io waits right now
    while not all(c.done() for c in copies):
        if pool.pending <= pool.size:  # sample only while work is queued for file_io
            await asyncio.sleep(0.002)
            continue
        lookups.append(await timed(lambda: provider.lookup(name)))
        queue_waits.append(await timed(lambda: executors.run(executors.FILE_IO, int)))
    results = await asyncio.gather(*copies)
    assert [r.files for r in results] == [FILES_PER_TREE, FILES_PER_TREE]
    assert len(lookups) >= 3, "the copies ended before the pool was seen saturated"
    # Relative, not absolute: a lookup does not wait in the file_io queue.
    assert statistics.median(lookups) * 3 < statistics.median(queue_waits), (lookups, queue_waits)
    assert max(lookups) < 10.0  # generous: a loaded CI machine


def test_sizes_are_configurable_and_checked() -> None:
    cfg = executors.parse_executors_section(Section({"file_io": 3}, "aftd.toml", "executors"))
    assert cfg.sizes() == {"file_io": 3, "secrets": 4, "scripts": 2}
    with pytest.raises(ConfigError, match=r"aftd.toml: executors.file_io: .*>= 1"):
        executors.parse_executors_section(Section({"file_io": 0}, "aftd.toml", "executors"))
    with pytest.raises(ConfigError, match=r"executors.threads"):
        executors.parse_executors_section(Section({"threads": 4}, "aftd.toml", "executors"))


async def test_pools_are_named_bounded_and_restart_after_shutdown() -> None:
    executors.configure({executors.SECRETS: 2})
    try:
        names = await asyncio.gather(*(executors.run(executors.SECRETS, _thread_name)
                                       for _ in range(20)))
        assert {n.rsplit("_", 1)[0] for n in names} == {"aftd-secrets"}
        assert len(set(names)) <= 2
        executors.shutdown()
        assert await executors.run(executors.SECRETS, _thread_name)  # a fresh pool
    finally:
        executors.configure(executors.DEFAULT_SIZES)
    with pytest.raises(KeyError, match="unknown executor 'gpu'"):
        executors.get("gpu")


def _thread_name() -> str:
    import threading
    return threading.current_thread().name


LATENCY_SCRIPT = '''
import asyncio, statistics, time
from aftd import executors

async def timed(aw):
    start = time.perf_counter()
    await aw
    return time.perf_counter() - start

async def main(job):
    src, dst = job.vfs("src"), job.vfs("dst")
    pool = executors.get("file_io")
    copies = [asyncio.ensure_future(src.copy_to(t, dst, "", transfers=4)) for t in ("t1", "t2")]
    lookups, waits = [], []
    while not all(c.done() for c in copies):
        if pool.pending <= pool.size:
            await asyncio.sleep(0.002)
            continue
        lookups.append(await timed(job.secret("token")))
        waits.append(await timed(executors.run("file_io", int)))
    await asyncio.gather(*copies)
    job.log.info("latency", file_io_threads=pool.size, samples=len(lookups),
                 lookup_median_s=statistics.median(lookups or [0]),
                 file_io_wait_median_s=statistics.median(waits or [0]))
'''


@pytest.mark.slow
async def test_daemon_secret_lookups_do_not_queue_behind_copies(
        make_daemon: Callable[..., Any], tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('token = "not-a-real-secret"\n')
    secrets.chmod(0o600)
    for d in ("src", "dst"):
        (tmp_path / d).mkdir()
    trees(tmp_path / "src")
    d = await make_daemon(scripts={"latency": LATENCY_SCRIPT}, extra_config=f"""
[executors]
file_io = 1
[secrets]
order = ["file"]
cache_ttl_s = 0
[secrets.file]
path = "{secrets}"
[vfs.src]
type = "local"
root = "{tmp_path / 'src'}"
[vfs.dst]
type = "local"
root = "{tmp_path / 'dst'}"
""")
    api = Api(d)
    try:
        status, body = await api.trigger("latency", {})
        assert status == 201, body
        job = await api.wait_job(body["jobId"], timeout=120)
        assert job["status"] == "succeeded", job
        _, log = await api.request("GET", f"/v1/jobs/{body['jobId']}/log")
    finally:
        await api.close()
    got = next(line for line in log["lines"] if line["event"] == "latency")
    assert got["file_io_threads"] == 1  # [executors] file_io reached the pool
    assert got["samples"] >= 3, got
    assert got["lookup_median_s"] * 3 < got["file_io_wait_median_s"], got
