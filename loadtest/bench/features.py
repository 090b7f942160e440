"""`rtvol bench features`: online update cost, ingest rate over gRPC, store and GetFeatures latency.

Everything runs in this one process (server and client share the CPU), so the gRPC figures
are pessimistic on a small machine. Latencies are p50/p99/p99.9 from an HDR histogram.

With Redis, the read path of 100 stocks is also compared variant by variant, for every
``--redis-url`` given (e.g. the same server over TCP and over its Unix socket): redis-py's
asyncio client (the store before rtvol.redis_mget), redis-py's sync client called on the
event loop and on a worker thread, and the store's own read. The variants take turns in
``--rounds-of-reads`` rounds so that a burst of load from elsewhere hits them all alike.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
import numpy as np
from hdrh.histogram import HdrHistogram

from rtvol import histograms, telemetry
from rtvol.features.online import OnlineState
from rtvol.features.online_replay import snapshot_batches
from rtvol.features.spec import N_FEATURES, STEPS, spec_hash
from rtvol.featurestore import FeatureStore, InProcessStore, RedisStore, decode_windows, window_key
from rtvol.ingest_codec import encode_columns
from rtvol.proto.v1 import features_pb2 as pb
from rtvol.proto.v1 import features_pb2_grpc as pb_grpc
from rtvol.services.feature.publisher import Publisher
from rtvol.services.feature.servicer import FeaturesServicer, Ingestor


def bench_apply(n_stocks: int, rounds: int) -> dict[str, float]:
    batches = snapshot_batches(n_stocks, rounds)
    state = OnlineState(n_stocks)
    started = time.perf_counter()
    for b in batches:
        state.apply(b)
    elapsed = time.perf_counter() - started
    n = n_stocks * rounds
    return {"updates_per_s": n / elapsed, "us_per_update": elapsed / n * 1e6}


def quantiles(h: HdrHistogram) -> str:
    return " ".join(f"p{q}={h.get_value_at_percentile(q):.0f}us" for q in histograms.PERCENTILES)


async def _latency(call: Callable[[], Awaitable[object]], reads: int, warmup: int = 200,
                   h: HdrHistogram | None = None) -> HdrHistogram:
    h = histograms.latency_us() if h is None else h
    for i in range(reads + warmup):
        t = time.perf_counter()
        await call()
        if i >= warmup:
            histograms.record_s(h, time.perf_counter() - t)
    return h


READ_SPEC = "bench-read-paths"  # own keys: random windows never land under a real spec's keys


async def bench_read_paths(urls: Sequence[str], n: int, reads: int, rounds: int
                           ) -> list[tuple[str, str, str]]:
    """(url, variant, quantiles) of reading ``n`` stocks' windows, variants interleaved by round."""
    import redis

    ids = np.arange(n)
    windows = np.random.default_rng(0).normal(size=(n, STEPS, N_FEATURES)).astype(np.float32)
    keys = [window_key(READ_SPEC, i) for i in range(n)]
    variants: list[tuple[str, str, Callable[[], Awaitable[object]]]] = []
    stores, syncs = [], []
    for url in urls:
        store = RedisStore.connect(url, READ_SPEC)
        await store.write(ids, windows, ids, ids)
        stores.append(store)

        async def store_read(store: RedisStore = store) -> object:
            return await store.read(ids)

        if store.cluster:  # only the store's own path: one pipelined round trip per node
            variants.append((url, "store.read: redis-py cluster, MGET per slot", store_read))
            continue
        sync: Any = redis.Redis.from_url(url)
        syncs.append(sync)

        async def redis_py_async(store: RedisStore = store) -> object:
            return decode_windows(await store.client.mget(keys))

        async def redis_py_sync(sync: Any = sync) -> object:
            return decode_windows(sync.mget(keys))

        async def redis_py_sync_thread(sync: Any = sync) -> object:
            return await asyncio.to_thread(lambda: decode_windows(sync.mget(keys)))

        variants += [(url, "redis-py asyncio MGET + decode (before)", redis_py_async),
                     (url, "redis-py sync MGET + decode, on the event loop", redis_py_sync),
                     (url, "redis-py sync MGET + decode, asyncio.to_thread", redis_py_sync_thread),
                     (url, "store.read: rtvol.redis_mget (after)", store_read)]
    hists = [histograms.latency_us() for _ in variants]
    for r in range(rounds):
        for (_, _, call), h in zip(variants, hists, strict=True):
            await _latency(call, -(-reads // rounds), 50 if r == 0 else 5, h)
    for store in stores:
        await store.close()
    for sync in syncs:
        sync.close()
    return [(url, name, quantiles(h)) for (url, name, _), h in zip(variants, hists, strict=True)]


async def bench_service(store: FeatureStore, n_stocks: int, rounds: int, reads: int) -> dict[str, str]:
    state = OnlineState(n_stocks)
    publisher = Publisher(state, store, 0.005)
    server = grpc.aio.server()
    servicer = FeaturesServicer(state, store, Ingestor(state, publisher, 1 << 20),
                                telemetry.tracer("rtvol-bench"))
    pb_grpc.add_FeaturesServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    publisher.start()
    msgs = [encode_columns(b) for b in snapshot_batches(n_stocks, rounds)]
    out = {}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = pb_grpc.FeaturesStub(ch)
        started = time.perf_counter()
        summary = await stub.Ingest(iter(msgs))
        elapsed = time.perf_counter() - started
        out["grpc_ingest"] = (f"{summary.accepted / elapsed:,.0f} updates/s ({summary.accepted:,} updates, "
                              f"{len(msgs)} messages of {n_stocks}, store flushes included)")
        ids = np.arange(100)
        request = pb.GetFeaturesRequest(stock_ids=ids.tolist())

        async def from_memory() -> object:
            return publisher.read(ids)

        async def grpc_get(memory: bool) -> object:
            servicer.from_memory = memory
            return await stub.GetFeatures(request)

        for name, call in (("store_read_100", lambda: store.read(ids)),
                           ("memory_read_100", from_memory),
                           ("grpc_get_features_100_from_store", lambda: grpc_get(False)),
                           ("grpc_get_features_100_from_memory", lambda: grpc_get(True))):
            out[name] = quantiles(await _latency(call, reads))
    await publisher.stop()
    await server.stop(0)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="rtvol bench features", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stocks", type=int, default=8000)
    p.add_argument("--rounds", type=int, default=60)
    p.add_argument("--reads", type=int, default=5000)
    p.add_argument("--redis-url", action="append", default=[],
                   help="empty: the in-process store; repeat it to compare read paths over several "
                        "URLs (redis://HOST:PORT/DB, unix:///PATH?db=DB, redis+cluster://HOST:PORT); "
                        "the first also serves the rest")
    p.add_argument("--read-stocks", type=int, default=100, help="stocks per read in the read-path table")
    p.add_argument("--rounds-of-reads", type=int, default=10,
                   help="read-path variants take turns this many times (--reads split over them)")
    p.add_argument("--reads-only", action="store_true", help="only the read-path table (needs --redis-url)")
    p.add_argument("--gpu", action="store_true",
                   help="only the Triton-vs-numpy comparison (loadtest/bench/features_gpu.py; "
                        "--groups N sets the offline size)")
    a, rest = p.parse_known_args(list(argv or []))
    if a.gpu:
        from rtvol.loadtest.bench import features_gpu as bench_gpu

        bench_gpu.main([f"--stocks={a.stocks}", *rest])
        return
    if rest:
        p.error(f"unrecognized arguments: {' '.join(rest)}")
    if a.reads_only and not a.redis_url:
        p.error("--reads-only needs --redis-url")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if not a.reads_only:
        bench_all(a)
    if a.redis_url:
        rows = asyncio.run(bench_read_paths(a.redis_url, a.read_stocks, a.reads, a.rounds_of_reads))
        print(f"read path, {a.read_stocks} stocks ({a.reads} reads each, "
              f"{a.rounds_of_reads} interleaved rounds):")
        for url, variant, q in rows:
            print(f"  {url:40} {variant:50} {q}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def bench_all(a: argparse.Namespace) -> None:
    r = bench_apply(a.stocks, a.rounds)
    print(f"online apply ({a.stocks} stocks x {a.rounds} rounds): {r['updates_per_s']:,.0f} updates/s, "
          f"{r['us_per_update']:.2f} us/update")
    url = a.redis_url[0] if a.redis_url else ""

    async def run() -> dict[str, str]:
        store: FeatureStore = RedisStore.connect(url, spec_hash()) if url else InProcessStore(spec_hash())
        try:
            return await bench_service(store, a.stocks, a.rounds, a.reads)
        finally:
            await store.close()

    for k, v in asyncio.run(run()).items():
        print(f"{k} ({'redis' if url else 'in-process store'}): {v}")
