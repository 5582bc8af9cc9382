"""Say hello: logs a greeting, optionally waits, and exits with the requested code."""

from __future__ import annotations

import asyncio

from aftd.script import Job

SCRIPT_NAME = "Hello"


async def main(job: Job) -> int:
    name = job.params.get("name", "world")
    job.log.info("hello", greeting=f"Hello, {name}!")
    seconds = float(job.params.get("sleep", 0))
    if seconds > 0:
        await asyncio.sleep(seconds)
    return int(job.params.get("exit_code", 0))
