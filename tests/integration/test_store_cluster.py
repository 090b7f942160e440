"""The feature store on a real 3-master Redis Cluster: stocks spread over slots and nodes,
one read is one pipelined round trip per node (an MGET per slot), the change stream and TTLs,
and the feature service process writing to it.

The behaviour shared with standalone Redis (read-back, change stream bounds, volatility
estimate) runs against the cluster too, in test_store_redis.py.
"""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path

import grpc
import numpy as np
import pytest
import redis
from helpers import procs
from helpers.redis_servers import Cluster
from redis.asyncio.cluster import ClusterNode
from redis.cluster import key_slot

from rtvol import featurestore as fs
from rtvol.features.online_replay import snapshot_batches
from rtvol.features.spec import N_FEATURES, STEPS, spec_hash
from rtvol.ingest_codec import encode_columns
from rtvol.proto.v1 import features_pb2 as pb
from rtvol.proto.v1 import features_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration
N = 300


def _node_of_slot(cluster: Cluster) -> dict[int, int]:
    """slot -> port of the master that owns it, as the cluster itself reports."""
    with redis.Redis(port=cluster.ports[0]) as r:
        ranges = r.execute_command("CLUSTER", "SLOTS")
    return {slot: int(port) for start, stop, (_, port, *_), *_ in ranges for slot in range(start, stop + 1)}


def _mget_calls(port: int) -> int:
    with redis.Redis(port=port) as r:
        return int(r.info("commandstats").get("cmdstat_mget", {}).get("calls", 0))


async def test_stocks_spread_over_nodes_and_a_read_is_one_round_trip_per_node(
        redis_cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = uuid.uuid4().hex[:16]
    store = fs.RedisStore.connect(redis_cluster.url, spec, ttl_s=60)
    assert store.cluster and store.reader is None  # cluster reads stay on redis-py
    ids = np.arange(N)
    w = np.random.default_rng(0).normal(size=(N, STEPS, N_FEATURES)).astype(np.float32)
    try:
        await store.write(ids, w, ids + 1, ids + 2)
        owner = _node_of_slot(redis_cluster)
        slots = {int(i): key_slot(fs.window_key(spec, int(i))) for i in ids}
        per_node = Counter(owner[s] for s in slots.values())
        assert set(per_node) == set(redis_cluster.ports)  # every master holds some stocks
        for port, count in per_node.items():  # and really holds them (asked directly, not via the client)
            with redis.Redis(port=port) as r:
                mine = [fs.window_key(spec, i) for i, s in slots.items() if owner[s] == port]
                assert sum(r.exists(k) for k in mine) == count
                assert 0 < r.ttl(mine[0]) <= 60

        slots_per_node = Counter(owner[s] for s in set(slots.values()))
        before = {p: _mget_calls(p) for p in redis_cluster.ports}
        trips: list[str] = []
        execute = ClusterNode.execute_pipeline

        async def counted(node: ClusterNode, commands: list) -> bool:  # type: ignore[type-arg]
            trips.append(node.name)
            return await execute(node, commands)

        monkeypatch.setattr(ClusterNode, "execute_pipeline", counted)
        got = await store.read(ids[::-1])
        monkeypatch.undo()
        assert got.found.all()
        np.testing.assert_array_equal(got.windows, w[::-1])
        assert got.sequence.tolist() == (ids[::-1] + 1).tolist()
        assert sorted(trips) == sorted(f"127.0.0.1:{p}" for p in redis_cluster.ports)  # one per node
        after = {p: _mget_calls(p) for p in redis_cluster.ports}
        assert {p: after[p] - before[p] for p in after} == dict(slots_per_node)  # one MGET per slot

        missing = await store.read(np.array([N + 5, 3]))
        assert missing.found.tolist() == [False, True]
    finally:
        await store.close()


async def test_change_stream_lives_on_one_slot_and_lists_each_batch(redis_cluster: Cluster) -> None:
    spec = uuid.uuid4().hex[:16]
    store = fs.RedisStore.connect(redis_cluster.url, spec, stream_maxlen=1000)
    w = np.zeros((2, STEPS, N_FEATURES), np.float32)
    try:
        for i in range(5):
            await store.write(np.array([i, 100 + i]), w, np.array([i, i]), np.array([0, 0]))
        entries = await store.changes(b"0", 10)
        assert [e[1].tolist() for e in entries] == [[i, 100 + i] for i in range(5)]
        assert [e[1].tolist() for e in await store.changes(entries[2][0], 10)] == [[3, 103], [4, 104]]
        port = _node_of_slot(redis_cluster)[key_slot(fs.stream_key(spec))]
        with redis.Redis(port=port) as r:  # the whole stream on the node that owns its slot
            assert r.xlen(fs.stream_key(spec)) == 5
    finally:
        await store.close()


async def test_the_feature_service_publishes_windows_to_the_cluster(redis_cluster: Cluster,
                                                                   tmp_path: Path) -> None:
    stocks = 16
    proc, target = procs.feature_service(tmp_path, redis_cluster.url, stocks)
    store = fs.RedisStore.connect(redis_cluster.url, spec_hash())
    try:
        msgs = [encode_columns(b) for b in snapshot_batches(stocks, 30)]
        msgs.append(pb.IngestRequest(watermark_us=30_000_000))  # steps 0-11 s and 12-23 s close
        async with grpc.aio.insecure_channel(target) as ch:
            summary = await pb_grpc.FeaturesStub(ch).Ingest(iter(msgs), timeout=30)
        assert (summary.accepted, summary.rejected) == (stocks * 30, 0)
        got = await store.read(np.arange(stocks))  # Ingest returns once its windows are written
        assert got.found.all() and (got.sequence == 29).all()
    finally:
        await store.close()
        assert proc.stop() == 0, proc.tail()
