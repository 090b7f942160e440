"""`rtvol bench apply`: the feature service's CPU per update on its apply path, in process.

Feeds the messages `rtvol bench pipeline` sends (pipeline_feed's ``build``: round robin over ``--stocks``,
event time ``--speedup`` times the wall clock, so steps close as in that bench) to
``Ingestor.apply_many``, with what the service has around it: a Publisher marking dirty
windows (no flush), a WindowFeed with one watcher (marks only; nothing is sent) and the
fan-out's VWAP and alerts consumers on their threads. ``--group`` messages go to one
apply_many call, as the stream batcher groups the messages that arrive in a run. After each
call, what the service's tasks would do next: the Watch push of the windows that changed
(built and queued to the watcher, as WindowFeed.send does) and, with ``--redis-url``, the
store's flush of those windows to that Redis.

Per shape it prints the process CPU (every thread, the consumers included) and the wall
time of the apply calls per update and per message, p50/p99/p99.9 of one call, the share
the consumers' threads took, and the CPU per update of the Watch push and the store flush.
Run it under the CPU lock; py-spy can record it:

    flock /tmp/rtvol-cpu.lock rtvol bench apply --shapes 100x1,1x1,1x10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from collections.abc import Sequence
from typing import Any

from rtvol import histograms
from rtvol.features.online import OnlineState
from rtvol.features.spec import spec_hash
from rtvol.featurestore import FeatureStore, InProcessStore, RedisStore
from rtvol.loadtest.bench.pipeline_feed import FeedPlan, build
from rtvol.proto.v1 import features_pb2 as pb
from rtvol.services.feature.alerts import Alerts
from rtvol.services.feature.fanout import Consumer, FanOut
from rtvol.services.feature.publisher import Publisher
from rtvol.services.feature.servicer import Ingestor
from rtvol.services.feature.vwap import Vwap
from rtvol.services.feature.watch import WindowFeed


def _thread_cpu_s() -> float:
    """CPU time of every thread of this process but the calling one."""
    return time.process_time() - time.thread_time()


async def bench_shape(batch: int, group: int, stocks: int, updates: int, speedup: float,
                      consumers: bool, redis_url: str = "") -> dict[str, Any]:
    """Applies ``updates`` updates in ``batch``-update messages, ``group`` messages a call."""
    rate = 20_000.0
    plan = FeedPlan(("",), rate, batch, stocks, 0, updates / rate, speedup)  # one replica: every stock
    messages = [pb.IngestRequest.FromString(m) for (m,) in build(plan)[0] if m is not None]
    state = OnlineState(stocks)
    vwap, alerts = Vwap(stocks), Alerts(stocks, lambda message: 0)
    fanout = FanOut([Consumer("vwap", vwap.handle, 256, "drop_oldest"),
                     Consumer("alerts", alerts.handle, 256, "drop_oldest")] if consumers else [])
    feed = WindowFeed(state, 1024)
    watcher = feed.watch()  # a watching gateway: Ingest marks the windows it would push
    store: FeatureStore = (RedisStore.connect(redis_url, "bench-apply") if redis_url
                           else InProcessStore(spec_hash()))
    publisher = Publisher(state, store, 0.0)
    ingestor = Ingestor(state, publisher, 1 << 16, fanout, None, feed)
    fanout.start()
    h = histograms.latency_us()
    calls = [messages[i:i + group] for i in range(0, len(messages), group)]
    warm = len(calls) // 10
    cpu = wall = others = watch = flush = 0.0
    for i, call in enumerate(calls):
        c0, o0, t0 = time.process_time(), _thread_cpu_s(), time.perf_counter()
        ingestor.apply_many(call, 0)
        t1 = time.perf_counter()
        c1 = time.process_time()
        feed.send()
        while not watcher.queue.empty():  # the gateway took it
            watcher.queue.get_nowait()
        c2 = time.process_time()
        if redis_url:
            await publisher.flush()
        c3 = time.process_time()
        if i >= warm:
            wall += t1 - t0
            histograms.record_s(h, t1 - t0)
            cpu += c1 - c0
            others += _thread_cpu_s() - o0
            watch += c2 - c1
            flush += c3 - c2
    for c in fanout.consumers:
        c.drain(10.0)
    fanout.stop()
    await store.close()
    n_msgs = sum(len(c) for c in calls[warm:])
    n_upd = n_msgs * batch
    return {"batch": batch, "group": group, "stocks": stocks, "messages": n_msgs,
            "cpu_us_per_update": round(cpu / n_upd * 1e6, 2),
            "cpu_us_per_message": round(cpu / n_msgs * 1e6, 2),
            "wall_us_per_update": round(wall / n_upd * 1e6, 2),
            "consumer_threads_share": round(others / cpu, 3) if cpu else 0.0,
            "watch_push_cpu_us_per_update": round(watch / n_upd * 1e6, 2),
            "store_flush_cpu_us_per_update": round(flush / n_upd * 1e6, 2) if redis_url else None,
            "call_us": {f"p{q}": round(h.get_value_at_percentile(q), 1) for q in histograms.PERCENTILES},
            "threads": threading.active_count()}


def parse_shapes(text: str) -> list[tuple[int, int]]:
    """'100x1,1x10' -> [(updates a message, messages a call), ...]."""
    return [(int(b), int(g)) for b, g in (s.split("x") for s in text.split(","))]


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="rtvol bench apply", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="100x1,1x1,1x10,1x100",
                   help="UPDATESxMESSAGES: updates a message, messages a call (default: %(default)s)")
    p.add_argument("--stocks", type=int, default=500)
    p.add_argument("--updates", type=int, default=100_000, help="updates per shape (single-update "
                   "shapes with one message a call use a tenth)")
    p.add_argument("--speedup", type=float, default=100.0, help="event time / wall time at 20,000 upd/s")
    p.add_argument("--no-consumers", action="store_true", help="no fan-out consumers (VWAP, alerts)")
    p.add_argument("--redis-url", default="", help="flush the changed windows to this Redis after each "
                   "call (keys under the spec hash 'bench-apply'); default: no store flush")
    p.add_argument("--out", help="write the results as JSON here")
    a = p.parse_args(argv)
    results = []
    for batch, group in parse_shapes(a.shapes):
        updates = a.updates // 10 if batch * group == 1 else a.updates
        r = asyncio.run(bench_shape(batch, group, a.stocks, updates, a.speedup, not a.no_consumers,
                                    a.redis_url))
        results.append(r)
        print(f"{batch:>5} upd/msg x {group:>4} msg/call, {a.stocks} stocks: "
              f"CPU {r['cpu_us_per_update']:8.2f} "
              f"µs/update {r['cpu_us_per_message']:9.2f} µs/msg (consumer threads "
              f"{r['consumer_threads_share']:.0%}); wall {r['wall_us_per_update']:.2f} µs/update; "
              f"call p50 {r['call_us']['p50']} p99 {r['call_us']['p99']} p99.9 {r['call_us']['p99.9']} µs; "
              f"Watch push {r['watch_push_cpu_us_per_update']} µs/update, store flush "
              + (f"{r['store_flush_cpu_us_per_update']} µs/update" if a.redis_url else "not run"),
              flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
