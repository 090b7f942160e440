"""The pipeline bench's feed: each replica gets its own stocks' updates in messages of the
plan's batch, every update once, and each step-closing update is found in the slot said."""

from __future__ import annotations

import numpy as np
import pytest

from rtvol import sharding
from rtvol.loadtest.bench.pipeline_feed import FeedPlan, build
from rtvol.proto.v1 import features_pb2 as pb


@pytest.mark.parametrize("replicas", [1, 3, 4])
def test_each_replica_gets_its_own_updates_in_whole_messages(replicas: int) -> None:
    plan = FeedPlan(tuple(f"r{i}" for i in range(replicas)), rate=20_000, batch=50, stocks=200,
                    first_stock=400, duration_s=0.5, speedup=100.0)
    messages, close_slot, close_stock, close_version = build(plan)
    assert len(messages) == 10_000 // 50
    seen: list[tuple[int, int]] = []  # (stock, sequence) of every update sent
    sizes: list[int] = []
    for slot in messages:
        for r, m in enumerate(slot):
            if m is None:
                continue
            c = pb.IngestRequest.FromString(m).columns
            ids = np.array(c.stock_id)
            assert (sharding.owner(ids, replicas) == r).all()  # only its owner's stocks
            assert list(c.event_time_us) == sorted(c.event_time_us)
            sizes.append(len(ids))
            seen += zip(c.stock_id, c.sequence, strict=True)
    assert len(seen) == len(set(seen)) == 10_000  # every update once
    assert sizes.count(50) >= len(sizes) - replicas  # whole messages, but each replica's last
    assert len(sizes) <= len(messages) + replicas  # not K parts a message: the same count
    for slot, stock in zip(close_slot.tolist(), close_stock.tolist(), strict=True):
        m = messages[slot][sharding.owner(np.array([stock]), replicas)[0]]
        assert m is not None and stock in pb.IngestRequest.FromString(m).columns.stock_id
    assert (close_version >= 1).all()
