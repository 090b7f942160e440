"""A long-running coroutine owned by a component (refresh loops, flushers, pollers)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


class BackgroundTask:
    """``start`` schedules the coroutine; ``stop`` cancels it and waits until it has ended,
    so nothing of it runs after the owner's own shutdown continues."""

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None

    def start(self, coro: Coroutine[Any, Any, None]) -> None:
        self._task = asyncio.create_task(coro)

    async def stop(self, timeout_s: float = 1.0) -> None:
        """Cancel and wait at most ``timeout_s``: a task that swallows its cancellation is
        logged, never allowed to hold its owner's shutdown. ``asyncio.wait`` (not ``await
        task`` under a suppress) lets a cancellation of the caller itself go through."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        await asyncio.wait([task], timeout=timeout_s)
        if not task.done():
            where = "; ".join(f"{f.f_code.co_qualname} line {f.f_lineno}" for f in task.get_stack())
            log.error("background task %s still running %.1f s after its cancellation, at %s",
                      task.get_name(), timeout_s, where or "?")
        elif not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())


async def next_round(seconds: float) -> None:
    """The pause between rounds of a refresh loop. A stop that landed inside a round and was
    swallowed there (a client library turning the cancellation into an error of its own, which
    the loop's ``except Exception`` then keeps going on) still ends the loop here: the task's
    count of cancellation requests stays up until someone uncancels it."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
    await asyncio.sleep(seconds)
