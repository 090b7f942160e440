"""Two feature-service replicas (two processes, one redis-server) own disjoint stocks and, fed
through the feed's split, store the same windows as one replica fed the same data."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import numpy as np
import pytest
from helpers import procs

from rtvol.features.spec import spec_hash
from rtvol.featurestore import RedisStore, Windows
from rtvol.loadtest.feed import run
from rtvol.proto.v1 import features_pb2 as pb
from rtvol.proto.v1 import features_pb2_grpc as pb_grpc
from rtvol.training import optiver

pytestmark = pytest.mark.integration


async def _read_and_flush(url: str, stocks: list[int]) -> Windows:
    store = RedisStore.connect(url, spec_hash())
    try:
        got = await store.read(np.array(stocks))
        await store.client.flushdb()  # the next service starts from an empty store
        return got
    finally:
        await store.close()


def _vol_stocks(url: str) -> list[int]:
    """The stocks the merged volatility estimate covers (every replica writes its own)."""
    async def read() -> list[int]:
        store = RedisStore.connect(url, spec_hash())
        try:
            est = await store.read_vol()
            return [] if est is None else sorted(est.stock_ids.tolist())
        finally:
            await store.close()

    return asyncio.run(read())


def _feed(targets: list[str], data: Path) -> tuple[int, int]:
    _, report = run(",".join(targets), data, range(40))
    return report.accepted, report.rejected


def test_two_replicas_store_the_same_windows_as_one(redis_db: str, tiny_data: Path, tmp_path: Path) -> None:
    stocks = [int(s) for s in optiver.stock_ids(tiny_data)]
    n = max(stocks) + 1
    asyncio.run(_read_and_flush(redis_db, stocks))
    one, target = procs.feature_service(tmp_path, redis_db, n)
    try:
        accepted, rejected = _feed([target], tiny_data)
        assert accepted > 0 and rejected == 0
    finally:
        one.stop()
    single = asyncio.run(_read_and_flush(redis_db, stocks))
    assert single.found.all()

    replicas: list[procs.Proc] = []
    try:
        targets = []
        for i in range(2):
            (tmp_path / f"r{i}").mkdir()
            proc, t = procs.feature_service(tmp_path / f"r{i}", redis_db, n, "--replicas", "2",
                                            "--replica", str(i))
            replicas.append(proc)
            targets.append(t)
        assert _feed(targets, tiny_data) == (accepted, 0)  # every update went to its owner
        with grpc.insecure_channel(targets[0]) as ch:
            stub = pb_grpc.FeaturesStub(ch)
            theirs = [s for s in stocks if s % 2 == 1]
            summary = stub.Ingest(iter([pb.IngestRequest(updates=[pb.MarketUpdate(
                stock_id=theirs[0], sequence=10**6, event_time_us=40 * 600 * 10**6, book=pb.BookSnapshot(
                    bid_price1=1.0, ask_price1=1.001, bid_price2=0.999, ask_price2=1.002, bid_size1=1,
                    ask_size1=1, bid_size2=1, ask_size2=1))])]), timeout=10)
            assert dict(summary.rejected_by_reason) == {"not_owned": 1}
            reply = stub.GetFeatures(pb.GetFeaturesRequest(stock_ids=stocks), timeout=10)
            assert all(reply.found)  # from the store: the other replica's stocks too
        assert procs.wait_until(lambda: _vol_stocks(redis_db) == stocks, 10), _vol_stocks(redis_db)
        sharded = asyncio.run(_read_and_flush(redis_db, stocks))
    finally:
        for proc in replicas:
            proc.stop()
    assert sharded.found.all()
    np.testing.assert_array_equal(sharded.windows, single.windows)
    np.testing.assert_array_equal(sharded.sequence, single.sequence)
    np.testing.assert_array_equal(sharded.event_time_us, single.event_time_us)
