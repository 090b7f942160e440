"""Fan-in: concurrent requests coalesce into one batch; each caller gets back exactly its
own rows, whatever it was batched with.

No timer: a batch leaves on the loop turn its first request arrived in while fewer than
``max_inflight`` batches are out (an idle gateway never waits), and requests that arrive
while that many are out queue up and leave together as soon as one comes back. Batches
grow with load by themselves. (A fixed window cannot be short here: asyncio's timers wait
on epoll, whose resolution is 1 ms, so a "200 µs" window measured 1.1 ms.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import numpy as np

from rtvol.services.gateway import metrics

BatchFn = Callable[[np.ndarray], Awaitable[dict[str, np.ndarray]]]
Item = tuple[np.ndarray, "asyncio.Future[dict[str, np.ndarray]]"]


class Coalescer:
    def __init__(self, fn: BatchFn, max_batch: int, max_inflight: int = 1) -> None:
        self.fn, self.max_batch, self.max_inflight = fn, max_batch, max(1, max_inflight)
        self._items: list[Item] = []
        self._rows = 0
        self._inflight = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, x: np.ndarray) -> dict[str, np.ndarray]:
        if len(x) > self.max_batch:  # larger than one batch: several, answered together
            parts = await asyncio.gather(*(self.submit(x[i:i + self.max_batch])
                                           for i in range(0, len(x), self.max_batch)))
            return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        if self._rows + len(x) > self.max_batch:
            self._flush()  # a full batch goes whatever is in flight: waiting gains nothing
        fut: asyncio.Future[dict[str, np.ndarray]] = asyncio.get_running_loop().create_future()
        self._items.append((x, fut))
        self._rows += len(x)
        if self._rows >= self.max_batch:
            self._flush()
        else:
            self._schedule()
        return await fut

    def _schedule(self) -> None:
        """Flush at the end of this loop turn (requests of the same turn share the batch),
        unless the in-flight limit is reached: then a returning batch flushes."""
        if not self._scheduled and self._inflight < self.max_inflight:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_soon)

    def _flush_soon(self) -> None:
        self._scheduled = False
        if self._inflight < self.max_inflight:
            self._flush()

    def _flush(self) -> None:
        items, self._items, self._rows = self._items, [], 0
        if items:
            self._inflight += 1
            task = asyncio.create_task(self._run(items))
            self._tasks.add(task)  # keep a reference until done
            task.add_done_callback(self._tasks.discard)

    async def _run(self, items: list[Item]) -> None:
        try:
            await self._answer(items)
        finally:
            self._inflight -= 1
            if self._items:
                self._schedule()

    async def _answer(self, items: list[Item]) -> None:
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
