"""Synchronous calls from the JavaScript thread into the worker's event loop.

SyncJS is synchronous: ``HttpCli().Post()`` returns the response. The engine runs on a thread of
its own; each host call that needs the event loop (HTTP, VFS, secrets, the outbox) runs there as
a task and the JavaScript thread waits for its result. Tasks run in a copy of the job's context,
so the copy engine finds the job's progress sink as it would for a Python script. When the job is
cancelled, :meth:`LoopBridge.cancel_all` cancels the calls in flight and waits for them, so a
copy cleans its temporary file up before the worker exits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["BridgeClosed", "LoopBridge"]


class BridgeClosed(Exception):
    """The job is ending: no further call reaches the event loop."""


class LoopBridge:
    def __init__(self, loop: asyncio.AbstractEventLoop, context: contextvars.Context) -> None:
        self._loop = loop
        self._context = context
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def run(self, make: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        """Run ``make()`` on the loop and wait for its result (from the JavaScript thread)."""
        done: concurrent.futures.Future[Any] = concurrent.futures.Future()
        try:
            self._loop.call_soon_threadsafe(self._start, make, done)
        except RuntimeError:  # the loop is closed: the worker is exiting
            raise BridgeClosed("the job is ending") from None
        try:
            return done.result()
        except concurrent.futures.CancelledError:
            raise BridgeClosed("the job is ending") from None

    def _start(self, make: Callable[[], Coroutine[Any, Any, Any]],
               done: concurrent.futures.Future[Any]) -> None:
        if self._closed:
            done.cancel()
            return
        task = self._loop.create_task(make(), context=self._context.copy())
        self._tasks.add(task)
        task.add_done_callback(functools.partial(self._finished, done))

    def _finished(self, done: concurrent.futures.Future[Any], task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            done.cancel()
        elif (exc := task.exception()) is not None:
            done.set_exception(exc)
        else:
            done.set_result(task.result())

    async def cancel_all(self, timeout_s: float) -> None:
        """Refuse new calls, cancel those in flight and give them ``timeout_s`` to clean up."""
        self._closed = True
        tasks = set(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)
