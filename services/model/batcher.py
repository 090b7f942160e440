"""Dynamic batching with Triton's semantics: requests queued for one model version coalesce
up to max_batch_size rows within max_queue_delay of the oldest one; each request gets back
exactly its own rows.

Idle dispatch (default): a request that finds the model quiet (empty queue, nothing
computing and no batch finished within the last max_queue_delay) is computed at once, in
its caller's turn, when it is small enough to compute on the event loop: a lone request
pays no hop to the batcher's task and back (the common case at low load, e.g. one client
at a time). Requests arriving right after it find traffic flowing and batch as below. A
quiet request that must go to the backend's thread goes out on the batcher's next turn,
together with whatever arrived in the same event-loop turn, without waiting. While traffic flows
(a batch finished less than max_queue_delay ago, or one is executing) requests wait up to
max_queue_delay for the batch to fill, as in Triton. Triton always waits unless a preferred
or maximum batch forms; `idle_dispatch=False` restores that. Waiting when no one else is
around only adds latency: nobody is coming to share the batch.

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

from rtvol.errors import ResourceExhausted, Unavailable
from rtvol.services.model import metrics
from rtvol.services.model.backends import Backend
from rtvol.services.model.served import ServedWork

_SLEEP_RESOLUTION_S = 2e-3


@dataclass(slots=True)
class _Item:
    x: np.ndarray
    future: asyncio.Future[dict[str, np.ndarray]]
    enqueued: float


class Batcher:
    # a lone request on a quiet model may be computed in its caller's turn (subclasses that
    # compute in awaited slices, shadow.py, cannot)
    lone_inline = True

    def __init__(self, model: str, backend: Backend, input_dims: tuple[int, ...], max_batch_size: int,
                 max_queue_delay_s: float, executor: Executor | None, inline_max_rows: int = 8,
                 idle_dispatch: bool = True, max_queue_rows: int = 16_384,
                 max_queue_bytes: int = 64 * 1024 * 1024, served: ServedWork | None = None) -> None:
        """``served``: where this batcher's requests count as served work, from submit until
        answered (a served version's batcher; shadow work yields to it, shadow.py)."""
        self.model, self.backend, self.max_batch = model, backend, max_batch_size
        self.delay = max_queue_delay_s
        self.executor = executor  # None: compute inline on the event loop (CPU, tiny model)
        # a hop to the backend thread costs more than ORT's ~50 µs at batch 1: small batches
        # run on the loop; big ones (milliseconds on a CPU) must not stall other requests' I/O
        self.inline_max_rows = inline_max_rows
        self.idle_dispatch = idle_dispatch
        # what may wait for a batch: beyond it a request is refused at once (RESOURCE_EXHAUSTED),
        # so a client that sends faster than the model computes cannot grow memory without end
        self.max_queue_rows, self.max_queue_bytes = max_queue_rows, max_queue_bytes
        self.served = served
        self.buffer = np.empty((max_batch_size, *input_dims), dtype=np.float32)  # reused per batch
        self.pending: collections.deque[_Item] = collections.deque()
        self.pending_rows = self.pending_bytes = 0
        self.wakeup = asyncio.Event()
        self.closed = False
        self.last_done = -float("inf")  # perf_counter when the previous batch finished
        self.computing = False  # a batch is in the backend (maybe on its thread): none beside it
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"batcher-{model}")
        self._queue = metrics.QUEUE.labels(model)
        self._compute = metrics.COMPUTE.labels(model, backend.name)
        self._batch = metrics.BATCH.labels(model)

    def submit(self, x: np.ndarray) -> asyncio.Future[dict[str, np.ndarray]]:
        """Queue ``x``; the future gets this request's outputs (owned arrays, rows in order)."""
        if self.closed:
            raise Unavailable(f"model '{self.model}' version is being unloaded; retry")
        rows, size = x.shape[0], x.nbytes
        if self.pending_rows + rows > self.max_queue_rows or self.pending_bytes + size > self.max_queue_bytes:
            raise ResourceExhausted(
                f"model '{self.model}': queue full ({self.pending_rows} rows, {self.pending_bytes} bytes "
                f"waiting; at most {self.max_queue_rows} rows, {self.max_queue_bytes} bytes); retry later")
        future: asyncio.Future[dict[str, np.ndarray]] = asyncio.get_running_loop().create_future()
        now = time.perf_counter()
        if (self.lone_inline and self.idle_dispatch and not self.pending and not self.computing
                and now - self.last_done > self.delay and rows <= self.inline_max_rows):
            self._answer_alone(_Item(x, future, now))
            return future
        self.pending.append(_Item(x, future, now))
        self.pending_rows += rows
        self.pending_bytes += size
        if self.served is not None:
            self.served.enter()
        self.wakeup.set()
        return future

    async def infer(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return await self.submit(x)

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
            quiet = self.pending[0].enqueued - self.last_done > self.delay
            if not (quiet and self.idle_dispatch):
                await self._gather()
            await self._execute(self._take())
            self.last_done = time.perf_counter()

    async def _gather(self) -> None:
        deadline = self.pending[0].enqueued + self.delay
        while self.pending_rows < self.max_batch and not self.closed:
            left = deadline - time.perf_counter()
            if left <= 0:
                return
            await asyncio.sleep(left if left >= _SLEEP_RESOLUTION_S else 0)

    def _take(self) -> list[_Item]:
        items, rows, size = [], 0, 0
        while self.pending and rows + self.pending[0].x.shape[0] <= self.max_batch:
            item = self.pending.popleft()
            rows += item.x.shape[0]
            size += item.x.nbytes
            items.append(item)
        self.pending_rows -= rows
        self.pending_bytes -= size
        return items

    async def _execute(self, items: list[_Item]) -> None:
        self.computing = True
        try:
            await self._answer(items)
        finally:
            self.computing = False
            if self.served is not None:
                self.served.leave(len(items))

    def _answer_alone(self, item: _Item) -> None:
        """``_answer`` for one request, on the loop, now: its future is done on return."""
        if self.served is not None:
            self.served.enter()
        start = self._started([item])
        try:
            outs = self.backend.infer(item.x)
        except Exception as e:
            self._fail([item], e)
        else:
            self._deliver([item], item.x.shape[0], outs, start)
        finally:
            self.last_done = time.perf_counter()
            if self.served is not None:
                self.served.leave(1)

    async def _run_backend(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """The backend's outputs for ``x`` (valid until its next call)."""
        if self.executor is None or x.shape[0] <= self.inline_max_rows:
            return self.backend.infer(x)
        return await asyncio.get_running_loop().run_in_executor(self.executor, self.backend.infer, x)

    async def _answer(self, items: list[_Item]) -> None:
        start = self._started(items)
        if len(items) == 1:
            x = items[0].x
        else:
            rows = sum(i.x.shape[0] for i in items)
            # into the backend's own input (pinned memory on a GPU: one copy fewer) where it has one
            buffer = getattr(self.backend, "input_buffer", None)
            x = np.concatenate([i.x for i in items], out=(self.buffer if buffer is None else buffer)[:rows])
        try:
            outs = await self._run_backend(x)
        except Exception as e:
            self._fail(items, e)
            return
        self._deliver(items, x.shape[0], outs, start)

    def _started(self, items: list[_Item]) -> float:
        """The compute's start (perf_counter), each item's queue time observed up to it."""
        start = time.perf_counter()
        for item in items:
            self._queue.observe(start - item.enqueued)
        return start

    @staticmethod
    def _fail(items: list[_Item], error: Exception) -> None:
        for item in items:
            if not item.future.done():
                item.future.set_exception(error)

    def _deliver(self, items: list[_Item], rows: int, outs: dict[str, np.ndarray], start: float) -> None:
        """Each item gets its own rows of ``outs`` (the batch's ``rows``, computed from ``start``)."""
        self._compute.observe(time.perf_counter() - start)
        self._batch.observe(rows)
        offset = 0
        for item in items:
            n = item.x.shape[0]
            if not item.future.done():  # the caller may have gone (cancelled)
                # copies: backend outputs are only valid until its next call
                item.future.set_result({k: v[offset:offset + n].copy() for k, v in outs.items()})
            offset += n
