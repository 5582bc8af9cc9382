"""Our own asyncio tasks: stopping a background task (cancel it and wait until it has ended, so
nothing it does outlives the object that started it), and the failure that ended a task group."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

__all__ = ["cancel_and_wait", "first_error"]


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` (None: nothing to do) and wait for it; its cancellation is not raised
    to the caller."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def first_error(eg: BaseExceptionGroup[BaseException]) -> BaseException:
    """The failure that stopped a task group (not the cancellations it caused), looking into
    nested groups; the first exception when all are cancellations."""
    for exc in eg.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return first_error(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return eg.exceptions[0]
