"""Dynamic batching with Triton's semantics: requests queued for one model version coalesce
up to max_batch_size rows within max_queue_delay of the oldest one; each request gets back
exactly its own rows.

epoll waits in whole milliseconds, so a sub-millisecond delay is waited by yielding to the
event loop (which lets already-received requests join) until the deadline.
"""

from __future__ import annotations

import asyncio
import collections
import time
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from rtvol.errors import Unavailable
from services.model import metrics
from services.model.backends import Backend

_SLEEP_RESOLUTION_S = 2e-3


@dataclass(slots=True)
class _Item:
    x: np.ndarray
    future: asyncio.Future[dict[str, np.ndarray]]
    enqueued: float


class Batcher:
    def __init__(self, model: str, backend: Backend, input_dims: tuple[int, ...], max_batch_size: int,
                 max_queue_delay_s: float, executor: Executor | None) -> None:
        self.model, self.backend, self.max_batch = model, backend, max_batch_size
        self.delay = max_queue_delay_s
        self.executor = executor  # None: compute inline on the event loop (CPU, tiny model)
        self.buffer = np.empty((max_batch_size, *input_dims), dtype=np.float32)  # reused per batch
        self.pending: collections.deque[_Item] = collections.deque()
        self.pending_rows = 0
        self.wakeup = asyncio.Event()
        self.closed = False
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"batcher-{model}")
        self._queue = metrics.QUEUE.labels(model)
        self._compute = metrics.COMPUTE.labels(model, backend.name)
        self._batch = metrics.BATCH.labels(model)

    async def infer(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """This request's outputs (owned arrays, rows in request order)."""
        if self.closed:
            raise Unavailable(f"model '{self.model}' version is being unloaded; retry")
        future: asyncio.Future[dict[str, np.ndarray]] = asyncio.get_running_loop().create_future()
        self.pending.append(_Item(x, future, time.perf_counter()))
        self.pending_rows += x.shape[0]
        self.wakeup.set()
        return await future

    async def close(self) -> None:
        """Stop taking requests; the ones already queued still get their answers."""
        self.closed = True
        self.wakeup.set()
        await self.task

    async def _run(self) -> None:
        while True:
            if not self.pending:
                if self.closed:
                    return
                self.wakeup.clear()
                await self.wakeup.wait()
                continue
            await self._gather()
            await self._execute(self._take())

    async def _gather(self) -> None:
        deadline = self.pending[0].enqueued + self.delay
        while self.pending_rows < self.max_batch and not self.closed:
            left = deadline - time.perf_counter()
            if left <= 0:
                return
            await asyncio.sleep(left if left >= _SLEEP_RESOLUTION_S else 0)

    def _take(self) -> list[_Item]:
        items, rows = [], 0
        while self.pending and rows + self.pending[0].x.shape[0] <= self.max_batch:
            item = self.pending.popleft()
            rows += item.x.shape[0]
            items.append(item)
        self.pending_rows -= rows
        return items

    async def _execute(self, items: list[_Item]) -> None:
        start = time.perf_counter()
        if len(items) == 1:
            x = items[0].x
        else:
            rows = sum(i.x.shape[0] for i in items)
            x = np.concatenate([i.x for i in items], out=self.buffer[:rows])
        for item in items:
            self._queue.observe(start - item.enqueued)
        try:
            if self.executor is None:
                outs = self.backend.infer(x)
            else:
                outs = await asyncio.get_running_loop().run_in_executor(self.executor, self.backend.infer, x)
        except Exception as e:
            for item in items:
                if not item.future.done():
                    item.future.set_exception(e)
            return
        self._compute.observe(time.perf_counter() - start)
        self._batch.observe(x.shape[0])
        offset = 0
        for item in items:
            n = item.x.shape[0]
            if not item.future.done():  # the caller may have gone (cancelled)
                # copies: backend outputs are only valid until its next call
                item.future.set_result({k: v[offset:offset + n].copy() for k, v in outs.items()})
            offset += n
