"""The Watch stream's work in one process: the feature service's send, each stream's
serialisation and each gateway worker's parse and hold, with the real OnlineState,
WindowFeed and WindowMemory and no network (docs/BENCHMARKS.md, "Each gateway worker follows
its own shard's windows").

A round closes one step of ``--chunk`` stocks (670: ~10 ms of 200,000 updates/s over 8,000
stocks at 100x event time) and sends them to ``--workers`` watchers, each following its
shard of the stocks as a gateway worker does. Prints the mean of each part a round.

    python -m rtvol.loadtest.bench.watch_stream --workers 8
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from rtvol import sharding
from rtvol.features.online import OnlineState
from rtvol.ingest_codec import decode
from rtvol.loadtest.ticks import StepTicks
from rtvol.proto.v1 import features_pb2 as fpb
from rtvol.services.feature.watch import Watcher, WindowFeed
from rtvol.services.gateway.memory import WindowMemory


def _drain(watchers: list[Watcher], memories: list[WindowMemory]) -> np.ndarray:
    """Every queued message serialised, parsed and held: (serialise s, parse+hold s, bytes)."""
    out = np.zeros(3)
    for w, mem in zip(watchers, memories, strict=True):
        while not w.queue.empty():
            message = w.queue.get_nowait()
            assert message is not None
            t = time.perf_counter()
            raw = message.SerializeToString()
            out[0] += time.perf_counter() - t
            t = time.perf_counter()
            mem.hold(fpb.WindowBatch.FromString(raw))
            out[1] += time.perf_counter() - t
            out[2] += len(raw)
    return out


def run(stocks: int, workers: int, chunk: int, rounds: int) -> dict[str, float]:
    state, ticks = OnlineState(stocks), StepTicks(stocks)
    for _ in range(3):  # two steps closed for every stock
        state.apply(decode(ticks.message(list(range(stocks)))))
    feed = WindowFeed(state, max_batch=1024)
    shared = (np.zeros(stocks, np.int64), np.zeros(stocks))  # the workers' shared table
    watchers = [feed.watch(rows=True, shard=(i, workers)) for i in range(workers)]
    memories = [WindowMemory(stocks, mine=sharding.owned(stocks, workers, i),
                             shared=shared if workers > 1 else None) for i in range(workers)]
    _drain(watchers, memories)  # the snapshots
    total = np.zeros(4)
    for r in range(rounds):
        ids = (np.arange(chunk) + r * chunk) % stocks
        state.apply(decode(ticks.message(ids.tolist())))
        feed.mark(ids, 1)
        t = time.perf_counter()
        feed.send()
        total += (time.perf_counter() - t, *_drain(watchers, memories))
    send, serialise, hold, size = total / rounds
    return {"send_ms": send * 1e3, "serialise_ms": serialise * 1e3, "hold_ms": hold * 1e3,
            "kbytes": size / 1e3}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stocks", type=int, default=8000, help="stock universe (default 8000)")
    p.add_argument("--workers", type=int, default=8, help="gateway workers, one watcher each (default 8)")
    p.add_argument("--chunk", type=int, default=670, help="stocks closing a step each round (default 670)")
    p.add_argument("--rounds", type=int, default=150, help="rounds measured (default 150)")
    a = p.parse_args(argv)
    if not 0 < a.chunk <= a.stocks or a.workers < 1 or a.rounds < 1:
        p.error("--chunk must be in 1..--stocks; --workers and --rounds at least 1")
    r = run(a.stocks, a.workers, a.chunk, a.rounds)
    print(f"a round of {a.chunk} windows to {a.workers} worker(s): send {r['send_ms']:.2f} ms, serialise "
          f"{r['serialise_ms']:.2f} ms (all streams), parse + hold {r['hold_ms']:.2f} ms (all workers), "
          f"{r['kbytes']:.0f} KB")


if __name__ == "__main__":
    main()
