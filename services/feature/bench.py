"""`rtvol bench features`: online update cost, ingest rate over gRPC, store and GetFeatures latency.

Everything runs in this one process (server and client share the CPU), so the gRPC figures
are pessimistic on a small machine. Latencies are p50/p99/p99.9 from an HDR histogram.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

import grpc
import numpy as np
from hdrh.histogram import HdrHistogram

from rtvol.features.online import OnlineState
from rtvol.features.online_replay import snapshot_batches
from rtvol.features.spec import spec_hash
from rtvol.featurestore import FeatureStore, InProcessStore, RedisStore
from rtvol.proto.v1 import features_pb2 as pb
from rtvol.proto.v1 import features_pb2_grpc as pb_grpc
from rtvol.telemetry import setup_tracing
from services.feature.decode import encode_columns
from services.feature.publisher import Publisher
from services.feature.servicer import FeaturesServicer, Ingestor


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
    return " ".join(f"p{q}={h.get_value_at_percentile(q):.0f}us" for q in (50, 99, 99.9))


async def _latency(call: Callable[[], Awaitable[object]], reads: int, warmup: int = 200) -> HdrHistogram:
    h = HdrHistogram(1, 10_000_000, 3)
    for i in range(reads + warmup):
        t = time.perf_counter()
        await call()
        if i >= warmup:
            h.record_value(max(1, int((time.perf_counter() - t) * 1e6)))
    return h


async def bench_service(store: FeatureStore, n_stocks: int, rounds: int, reads: int) -> dict[str, str]:
    state = OnlineState(n_stocks)
    publisher = Publisher(state, store, 0.005)
    server = grpc.aio.server()
    servicer = FeaturesServicer(state, store, Ingestor(state, publisher, 1 << 20),
                                setup_tracing("rtvol-bench"))
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
    p = argparse.ArgumentParser(prog="rtvol bench features", description=__doc__)
    p.add_argument("--stocks", type=int, default=8000)
    p.add_argument("--rounds", type=int, default=60)
    p.add_argument("--reads", type=int, default=5000)
    p.add_argument("--redis-url", default="", help="empty: the in-process store")
    p.add_argument("--gpu", action="store_true",
                   help="only the Triton-vs-numpy comparison (services/feature/bench_gpu.py; "
                        "--groups N sets the offline size)")
    a, rest = p.parse_known_args(list(argv or []))
    if a.gpu:
        from services.feature import bench_gpu

        bench_gpu.main([f"--stocks={a.stocks}", *rest])
        return
    if rest:
        p.error(f"unrecognized arguments: {' '.join(rest)}")
    r = bench_apply(a.stocks, a.rounds)
    print(f"online apply ({a.stocks} stocks x {a.rounds} rounds): {r['updates_per_s']:,.0f} updates/s, "
          f"{r['us_per_update']:.2f} us/update")

    async def run() -> dict[str, str]:
        store: FeatureStore = (RedisStore.connect(a.redis_url, spec_hash()) if a.redis_url
                               else InProcessStore(spec_hash()))
        try:
            return await bench_service(store, a.stocks, a.rounds, a.reads)
        finally:
            await store.close()

    for k, v in asyncio.run(run()).items():
        print(f"{k} ({'redis' if a.redis_url else 'in-process store'}): {v}")
