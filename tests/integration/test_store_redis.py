"""The feature store against a real redis-server (TCP, Unix socket, a 3-master Redis Cluster),
and the in-process store behaving the same."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import numpy as np
import pytest

from rtvol import featurestore as fs
from rtvol.features.spec import N_FEATURES, STEPS

pytestmark = pytest.mark.integration


@pytest.fixture(params=["redis", "unix", "cluster", "inprocess"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[fs.FeatureStore]:
    spec = uuid.uuid4().hex[:16]  # own keys: the session's redis-server is shared
    s: fs.FeatureStore
    if request.param != "inprocess":
        url = {"redis": lambda: request.getfixturevalue("redis_server"),
               "unix": lambda: request.getfixturevalue("redis_unix")[1],
               "cluster": lambda: request.getfixturevalue("redis_cluster").url}[request.param]()
        s = fs.RedisStore.connect(url, spec, ttl_s=60, stream_maxlen=5)
    else:
        s = fs.InProcessStore(spec, ttl_s=60, stream_maxlen=5)
    yield s
    await s.close()


def _windows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, STEPS, N_FEATURES)).astype(np.float32)


async def test_write_then_read_many_in_one_round_trip(store: fs.FeatureStore) -> None:
    ids = np.array([1, 7, 300])
    w = _windows(3, 0)
    await store.write(ids, w, np.array([10, 11, 12]), np.array([600, 601, 602]))
    got = await store.read(np.array([7, 2, 300, 1]))
    assert got.found.tolist() == [True, False, True, True]
    np.testing.assert_array_equal(got.windows[[0, 2, 3]], w[[1, 2, 0]])
    assert got.sequence.tolist() == [11, 0, 12, 10]
    assert got.event_time_us.tolist() == [601, 0, 602, 600]
    assert (got.age_ms()[got.found] < 5_000).all()


async def test_change_stream_lists_each_batch_and_stays_bounded(store: fs.FeatureStore) -> None:
    n = 250  # Redis trims whole stream nodes (100 entries each): write well past a node
    for i in range(n):
        await store.write(np.array([i, i + 1]), _windows(2, i), np.array([i, i]), np.array([0, 0]))
    entries = await store.changes(b"0", 100)
    assert 5 <= len(entries) < n
    assert entries[-1][1].tolist() == [n - 1, n]
    after = await store.changes(entries[-2][0], 10)
    assert len(after) == 1 and after[0][1].tolist() == [n - 1, n]


async def test_vol_estimate_round_trip(store: fs.FeatureStore) -> None:
    assert await store.read_vol() is None
    est = fs.VolEstimate(np.array([1, 2], np.int32), np.array([0.1, 0.2], np.float32), fs.now_us())
    await store.write_vol(est)
    back = await store.read_vol()
    assert back is not None and back.vol.tolist() == pytest.approx([0.1, 0.2])
    assert 0 <= back.age_ms() < 5_000


async def test_redis_keys_expire(redis_server: str) -> None:
    import redis.asyncio as aioredis

    spec = uuid.uuid4().hex[:16]
    store = fs.RedisStore.connect(redis_server, spec, ttl_s=30)
    await store.write(np.array([5]), _windows(1, 1), np.array([1]), np.array([1]))
    client = aioredis.Redis.from_url(redis_server)
    ttl = await client.ttl(fs.window_key(spec, 5))
    assert 0 < ttl <= 30
    await client.aclose()
    await store.close()
