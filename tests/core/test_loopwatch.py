"""The loop-lag monitor in-process: it names the job whose code blocks the loop, even from a
task the job created, falls back to the script file on the stack, and reports stall lengths."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from aftd.loopwatch import LoopWatch, bind_job
from aftd.redact import register


def _blocking_sleep(seconds: float) -> None:
    time.sleep(seconds)


class Observed:
    def __init__(self) -> None:
        self.blocked: list[str | None] = []
        self.unblocked: list[float] = []


async def _watched(threshold: float, body: Any, scripts_dir: Path | None = None,
                   ) -> tuple[list[dict[str, Any]], Observed]:
    seen = Observed()
    watch = LoopWatch(threshold, scripts_dir=scripts_dir, on_blocked=seen.blocked.append,
                      on_unblocked=seen.unblocked.append)
    with capture_logs() as logs:
        watch.start()
        try:
            await asyncio.sleep(0.2)  # a few heartbeats first
            await body()
            await asyncio.sleep(0.3)  # let the watcher see the loop move again
        finally:
            watch.stop()
    return [e for e in logs if e["event"].startswith("event_loop_")], seen


async def test_a_blocking_job_task_is_named_with_its_stack() -> None:
    async def job() -> None:
        bind_job("job-1", "slowpoke")
        _blocking_sleep(0.6)

    events, seen = await _watched(0.2, lambda: asyncio.create_task(job()))
    assert [e["event"] for e in events] == ["event_loop_blocked", "event_loop_unblocked"]
    blocked, ended = events
    assert (blocked["job_id"], blocked["script_id"]) == ("job-1", "slowpoke")
    assert "_blocking_sleep" in blocked["stack"] and "time.sleep(seconds)" in blocked["stack"]
    assert blocked["blocked_s"] >= 0.2
    assert ended["blocked_s"] >= 0.4 and ended["job_id"] == "job-1"
    assert seen.blocked == ["slowpoke"]
    assert len(seen.unblocked) == 1 and seen.unblocked[0] >= 0.4


async def test_a_task_created_by_the_job_carries_its_name() -> None:
    async def child() -> None:
        _blocking_sleep(0.5)

    async def job() -> None:
        bind_job("job-2", "fanout")
        await asyncio.gather(child())

    events, _ = await _watched(0.2, lambda: asyncio.create_task(job()))
    assert (events[0]["job_id"], events[0]["script_id"]) == ("job-2", "fanout")


async def test_without_a_job_the_script_file_on_the_stack_names_the_script(
        tmp_path: Path) -> None:
    script = tmp_path / "legacy.py"
    script.write_text("import time\n\ndef stall():\n    time.sleep(0.5)\n")
    namespace: dict[str, Any] = {}
    exec(compile(script.read_text(), str(script), "exec"), namespace)  # noqa: S102

    async def anonymous() -> None:
        namespace["stall"]()

    events, seen = await _watched(0.2, anonymous, scripts_dir=tmp_path)
    assert (events[0]["job_id"], events[0]["script_id"]) == (None, "legacy")
    assert "legacy.py" in events[0]["stack"]
    assert seen.blocked == ["legacy"]


async def test_short_stalls_and_a_zero_threshold_log_nothing() -> None:
    async def brief() -> None:
        _blocking_sleep(0.05)

    events, seen = await _watched(0.5, brief)
    assert events == [] and seen.blocked == []

    async def long() -> None:
        _blocking_sleep(0.4)

    events, seen = await _watched(0, long)
    assert events == [] and seen.unblocked == []


async def test_the_task_factory_keeps_names_and_is_removed_on_stop() -> None:
    loop = asyncio.get_running_loop()
    watch = LoopWatch(1.0)
    watch.start()
    try:
        task = asyncio.create_task(asyncio.sleep(0), name="named-task")
        assert task.get_name() == "named-task"
        await task
    finally:
        watch.stop()
    assert loop.get_task_factory() is None


async def test_stack_is_scrubbed_of_secrets() -> None:
    register("hunter2-very-secret")

    async def job() -> None:
        # The source line shown in the stack holds the secret.
        _blocking_sleep(0.5 if "hunter2-very-secret" else 0)

    events, _ = await _watched(0.2, lambda: asyncio.create_task(job()))
    assert "hunter2-very-secret" not in events[0]["stack"]
    assert "_blocking_sleep(0.5 if \"***\" else 0)" in events[0]["stack"]
