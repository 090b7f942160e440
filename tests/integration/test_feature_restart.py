"""A feature service killed (SIGKILL) mid-feed comes back with its state: a replay is still
rejected, the windows in Redis are not rolled back, GetFeatures finds every stock."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import numpy as np
import pytest
from helpers import feed, procs

from rtvol.features.spec import BUCKET_SECONDS, spec_hash
from rtvol.featurestore import RedisStore, Windows
from rtvol.loadtest.feed import run
from rtvol.proto.v1 import features_pb2 as pb
from rtvol.proto.v1 import features_pb2_grpc as pb_grpc
from rtvol.training import optiver

pytestmark = pytest.mark.integration


def _stored(url: str, stocks: list[int]) -> Windows:
    async def read() -> Windows:
        store = RedisStore.connect(url, spec_hash())
        try:
            return await store.read(np.array(stocks))
        finally:
            await store.close()

    return asyncio.run(read())


def test_a_killed_service_restarts_with_its_state(redis_db: str, tiny_data: Path, tmp_path: Path) -> None:
    stocks = [int(s) for s in optiver.stock_ids(tiny_data)]
    assert asyncio.run(_flush(redis_db)) == 0
    proc, target = procs.feature_service(tmp_path, redis_db, max(stocks) + 1)
    try:
        thread = feed.in_background(target, tiny_data, range(40), seconds=8)
        mid = 10 * BUCKET_SECONDS * 1_000_000
        assert procs.wait_until(lambda: _stored(redis_db, stocks).event_time_us.min() > mid, 30)
        proc.kill()  # SIGKILL mid-feed: no drain, no last flush
        thread.join(30)
        before = _stored(redis_db, stocks)
        assert before.found.all() and before.event_time_us.max() < 39 * BUCKET_SECONDS * 1_000_000

        proc.restart()
        with grpc.insecure_channel(target) as ch:
            stub = pb_grpc.FeaturesStub(ch)
            reply = stub.GetFeatures(pb.GetFeaturesRequest(stock_ids=stocks), timeout=10)
            assert all(reply.found)  # the state came back from Redis
            np.testing.assert_array_equal(reply.sequence, before.sequence)
            served = np.frombuffer(reply.windows, "<f4").reshape(before.windows.shape)
            np.testing.assert_array_equal(served, before.windows)

        _, replay = run(target, tiny_data, range(1))  # bucket 0 again: a replay
        assert replay.updates > 0 and (replay.accepted, replay.rejected) == (0, replay.updates)
        after = _stored(redis_db, stocks)
        np.testing.assert_array_equal(after.sequence, before.sequence)  # not rolled back
        np.testing.assert_array_equal(after.event_time_us, before.event_time_us)
        np.testing.assert_array_equal(after.windows, before.windows)

        _, rest = run(target, tiny_data, range(39, 40))  # the feed goes on where it is
        assert rest.accepted > 0
        assert (_stored(redis_db, stocks).sequence > before.sequence).all()
    finally:
        proc.stop()


async def _flush(url: str) -> int:
    """Start from an empty database: the state of another run must not be recovered here."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    try:
        await client.flushdb()
        return int(await client.dbsize())
    finally:
        await client.aclose()
