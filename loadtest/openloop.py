"""Open-loop load: requests start on a fixed schedule whatever the server does.

Latency runs from each request's *intended* start, so a stall delays every request that
should have gone out during it and shows in the tail (no coordinated omission). In-flight
requests and total time are both bounded: a request that would exceed ``max_inflight`` is
not sent and counts as an ``inflight_limit`` error.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

Send = Callable[[list[int]], Awaitable[None]]


@dataclass
class Result:
    rate: float
    duration_s: float
    elapsed_s: float = 0.0
    scheduled: int = 0
    intended_s: list[float] = field(default_factory=list)  # offsets from the start, successes only
    latency_s: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> int:
        return len(self.latency_s)


def error_kind(e: BaseException) -> str:
    import grpc

    kind = getattr(e, "kind", None)
    if isinstance(kind, str):
        return kind
    if isinstance(e, grpc.aio.AioRpcError):
        return f"grpc:{e.code().name}"
    if isinstance(e, TimeoutError | asyncio.TimeoutError):
        return "timeout"
    return type(e).__name__


async def run(send: Send, rate: float, duration_s: float, stocks: Sequence[int], ids_per_request: int = 1,
              max_inflight: int = 256, timeout_s: float = 2.0) -> Result:
    if rate <= 0 or duration_s <= 0 or not stocks:
        raise ValueError("rate, duration and stocks must be positive / non-empty")
    res = Result(rate, duration_s)
    total = max(1, int(rate * duration_s))
    inflight: set[asyncio.Task[None]] = set()
    t0 = time.perf_counter()

    async def one(i: int, intended: float) -> None:
        ids = [stocks[(i * ids_per_request + k) % len(stocks)] for k in range(ids_per_request)]
        try:
            await asyncio.wait_for(send(ids), timeout_s)
        except Exception as e:  # every failure is data: counted by kind, never raised
            res.errors[error_kind(e)] += 1
            return
        res.intended_s.append(intended - t0)
        res.latency_s.append(time.perf_counter() - intended)

    for i in range(total):
        intended = t0 + i / rate
        delay = intended - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        res.scheduled += 1
        if len(inflight) >= max_inflight:
            res.errors["inflight_limit"] += 1
            continue
        task = asyncio.create_task(one(i, intended))
        inflight.add(task)
        task.add_done_callback(inflight.discard)
    if inflight:  # each request is bounded by timeout_s already; this bounds the drain as a whole
        await asyncio.wait(set(inflight), timeout=timeout_s + 1.0)
    res.elapsed_s = time.perf_counter() - t0
    return res
