"""One open-loop schedule sent by several generator processes, so that the generator is not the
bottleneck it measures (one Python process spends 140-280 µs of CPU a request).

Each process has its own event loop and connections and sends every n-th request of the shared
schedule (openloop.schedule) from a start time they all agree on, after all have connected;
their samples are merged exactly (openloop.merge).
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing as mp
import queue
import time
from typing import TYPE_CHECKING, Any

from rtvol import cpus
from rtvol.loadtest import clients, openloop

if TYPE_CHECKING:
    from rtvol.loadtest.run import Plan

READY_TIMEOUT_S = 60.0  # a spawned process imports grpc, aiohttp, numpy...: seconds on a busy machine
START_MARGIN_S = 0.2  # from "all connected" to the first request: each process sees the start coming


def auto() -> int:
    """``--processes auto``: a quarter of the cores this process may use (at least one); the rest
    stay for what is measured."""
    return max(1, cpus.available() // 4)


def share(total: int, parts: int) -> int:
    """Each part's share of a bound on the whole (in-flight requests, connections), at least 1."""
    return max(1, math.ceil(total / parts))


async def measure(plan: Plan, rate: float, part: int = 0, parts: int = 1, ready: Any = None,
                  go: Any = None, start_at: Any = None) -> openloop.Result:
    """Part ``part`` of ``parts`` on its own connections. Alone (no ``go``): starts at once.
    Otherwise it says ``ready`` once connected and starts at the wall-clock ``start_at`` the
    parent sets when every part is ready."""
    async with clients.connect(plan.target, share(plan.max_inflight, parts), plan.client_tls,
                               plan.api_key, share(plan.grpc_connections, parts)) as send:
        t0 = None
        if go is not None:
            ready.put(("ready", part, None))
            if not await asyncio.to_thread(go.wait, READY_TIMEOUT_S + START_MARGIN_S):
                raise TimeoutError("no start signal from the parent")
            t0 = time.perf_counter() + (start_at.value - time.time())
        return await openloop.run(send, rate, plan.duration_s, plan.stocks, plan.ids_per_request,
                                  share(plan.max_inflight, parts), plan.timeout_s, part, parts, t0)


def _child(plan: Plan, rate: float, part: int, parts: int, messages: Any, go: Any, start_at: Any) -> None:
    try:
        res = asyncio.run(measure(plan, rate, part, parts, messages, go, start_at))
    except BaseException as e:  # reported to the parent, which fails the run with it
        messages.put(("failed", part, f"{type(e).__name__}: {e}"))
        return
    messages.put(("done", part, res))


def run(plan: Plan, rate: float, processes: int) -> openloop.Result:
    """The schedule at ``rate`` split over ``processes`` generator processes (spawned: no state
    forked from this one's event loop or gRPC)."""
    if processes < 1:
        raise ValueError("processes must be >= 1")
    if processes == 1:
        return asyncio.run(measure(plan, rate))
    ctx = mp.get_context("spawn")
    messages, go, start_at = ctx.Queue(), ctx.Event(), ctx.Value("d", 0.0)
    procs = [ctx.Process(target=_child, args=(plan, rate, k, processes, messages, go, start_at),
                         name=f"rtvol-loadgen-{k}", daemon=True) for k in range(processes)]
    for p in procs:
        p.start()
    try:
        _wait(messages, procs, "ready", READY_TIMEOUT_S)
        start_at.value = time.time() + START_MARGIN_S
        go.set()
        parts = _wait(messages, procs, "done", START_MARGIN_S + plan.duration_s + plan.timeout_s + 30.0)
        return openloop.merge([parts[k] for k in range(processes)])
    finally:
        for p in procs:  # each has answered (or failed) by now; a stuck one is not waited on forever
            p.join(5.0)
            if p.is_alive():
                p.kill()
                p.join(5.0)


def _wait(messages: Any, procs: list[Any], kind: str, timeout_s: float) -> dict[int, Any]:
    """A message of ``kind`` from every part (their payloads by part), or an error naming the
    part that failed or died, or the wait that ran out."""
    got: dict[int, Any] = {}
    deadline = time.monotonic() + timeout_s
    while len(got) < len(procs):
        try:
            what, part, payload = messages.get(timeout=min(1.0, max(0.01, deadline - time.monotonic())))
        except queue.Empty:
            if dead := [k for k, p in enumerate(procs) if p.exitcode not in (None, 0)]:
                raise RuntimeError(f"load generator process {dead[0]} died (exit code "
                                   f"{procs[dead[0]].exitcode})") from None
            if time.monotonic() < deadline:
                continue
            raise RuntimeError(f"load generator: {len(procs) - len(got)} of {len(procs)} processes not "
                               f"{kind} within {timeout_s:.0f} s") from None
        if what == "failed":
            raise RuntimeError(f"load generator process {part} failed: {payload}")
        if what == kind:
            got[part] = payload
    return got


def processes_arg(text: str) -> int:
    """``--processes``: a count, or ``auto``."""
    if text == "auto":
        return auto()
    n = int(text)
    if n < 1:
        raise ValueError("must be >= 1 or auto")
    return n

