"""Fan-in: concurrent requests coalesce into one batch within a small window; each caller
gets back exactly its own rows, whatever it was batched with."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import numpy as np

from services.gateway import metrics

BatchFn = Callable[[np.ndarray], Awaitable[dict[str, np.ndarray]]]


class Coalescer:
    def __init__(self, fn: BatchFn, window_s: float, max_batch: int) -> None:
        self.fn, self.window_s, self.max_batch = fn, window_s, max_batch
        self._items: list[tuple[np.ndarray, asyncio.Future[dict[str, np.ndarray]]]] = []
        self._rows = 0
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, x: np.ndarray) -> dict[str, np.ndarray]:
        if len(x) > self.max_batch:  # larger than one batch: several, answered together
            parts = await asyncio.gather(*(self.submit(x[i:i + self.max_batch])
                                           for i in range(0, len(x), self.max_batch)))
            return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        if self._rows + len(x) > self.max_batch:
            self._flush()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[dict[str, np.ndarray]] = loop.create_future()
        self._items.append((x, fut))
        self._rows += len(x)
        if self._rows >= self.max_batch:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.window_s, self._flush)
        return await fut

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        items, self._items, self._rows = self._items, [], 0
        if items:
            task = asyncio.create_task(self._run(items))
            self._tasks.add(task)  # keep a reference until done
            task.add_done_callback(self._tasks.discard)

    async def _run(self, items: list[tuple[np.ndarray, asyncio.Future[dict[str, np.ndarray]]]]) -> None:
        x = items[0][0] if len(items) == 1 else np.concatenate([i[0] for i in items])
        metrics.BATCH.observe(len(x))
        try:
            out = await self.fn(x)
        except Exception as e:
            for _, fut in items:
                if not fut.done():
                    fut.set_exception(e)
            return
        start = 0
        for rows, fut in items:
            end = start + len(rows)
            if not fut.done():  # a caller that gave up (deadline) is skipped
                fut.set_result({k: v[start:end] for k, v in out.items()})
            start = end
