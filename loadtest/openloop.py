"""Open-loop load: requests start on a fixed schedule whatever the server does.

Latency runs from each request's *intended* start, so a stall delays every request that
should have gone out during it and shows in the tail (no coordinated omission). In-flight
requests and total time are both bounded: a request that would exceed ``max_inflight`` is
not sent and counts as an ``inflight_limit`` error.

The schedule may be split over generator processes (loadtest/fanout.py): part k of n sends
requests k, k+n, k+2n, ... at their times from one shared start, so the union of the parts is
the one-process schedule and each part keeps the no-coordinated-omission property.
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
    generator_cpu_s: list[float] = field(default_factory=list)  # CPU each generator process spent
    # how late the generator sent each scheduled request (its own loop's lag): a client-side tail
    send_late_s: list[float] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return len(self.latency_s)


def schedule(rate: float, duration_s: float, part: int = 0, parts: int = 1) -> range:
    """The request numbers part ``part`` of ``parts`` sends; request i is due i / rate after the start."""
    if not 0 <= part < parts:
        raise ValueError(f"part {part} of {parts}")
    return range(part, max(1, int(rate * duration_s)), parts)


def merge(results: Sequence[Result]) -> Result:
    """The parts of one split schedule as one run: samples concatenated (percentiles are taken
    from them afterwards, never averaged), counts and errors summed."""
    first = results[0]
    out = Result(first.rate, first.duration_s, elapsed_s=max(r.elapsed_s for r in results))
    for r in results:
        out.scheduled += r.scheduled
        out.intended_s += r.intended_s
        out.latency_s += r.latency_s
        out.errors += r.errors
        out.generator_cpu_s += r.generator_cpu_s
        out.send_late_s += r.send_late_s
    return out


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
              max_inflight: int = 256, timeout_s: float = 2.0, part: int = 0, parts: int = 1,
              t0: float | None = None) -> Result:
    """Send part ``part`` of ``parts`` of the schedule; ``t0`` (perf_counter, default now) is the
    start every part shares."""
    if rate <= 0 or duration_s <= 0 or not stocks:
        raise ValueError("rate, duration and stocks must be positive / non-empty")
    res = Result(rate, duration_s)
    inflight: set[asyncio.Task[None]] = set()
    t0 = time.perf_counter() if t0 is None else t0
    cpu0 = time.process_time()

    async def one(i: int, intended: float) -> None:
        ids = [stocks[(i * ids_per_request + k) % len(stocks)] for k in range(ids_per_request)]
        try:
            await asyncio.wait_for(send(ids), timeout_s)
        except Exception as e:  # every failure is data: counted by kind, never raised
            res.errors[error_kind(e)] += 1
            return
        res.intended_s.append(intended - t0)
        res.latency_s.append(time.perf_counter() - intended)

    for i in schedule(rate, duration_s, part, parts):
        intended = t0 + i / rate
        delay = intended - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        res.send_late_s.append(time.perf_counter() - intended)
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
    res.generator_cpu_s.append(time.process_time() - cpu0)
    return res
