"""A feature-service replica writes only the stocks it owns: another replica's updates are
rejected (not_owned) before they touch the state, and a watermark, which closes the steps of
every stock with an open step, finds none of theirs open, so neither their windows nor their
checkpoints are written to the shared store (that would overwrite the owner's)."""

from __future__ import annotations

import asyncio

import numpy as np

from rtvol import sharding
from rtvol.features.online import OnlineState
from rtvol.features.online_batch import R
from rtvol.featurestore import InProcessStore
from rtvol.loadtest.ticks import STEP_US, StepTicks
from rtvol.services.feature.publisher import Publisher
from rtvol.services.feature.servicer import Ingestor

STOCKS, REPLICAS = 6, 2


def test_a_replica_stores_only_its_own_stocks_even_when_a_watermark_closes_steps() -> None:
    async def run() -> tuple[np.ndarray, list[bytes | None], np.ndarray]:
        state, store = OnlineState(STOCKS), InProcessStore("x")
        publisher = Publisher(state, store, 0.0)
        owned = sharding.owned(STOCKS, REPLICAS, 0)
        ingestor = Ingestor(state, publisher, 1000, owned=owned)
        ticks, counts = StepTicks(STOCKS), np.zeros(len(R), np.int64)
        for _ in range(3):  # every stock's updates reach this replica: half of them are not its own
            counts += ingestor.apply(ticks.message(np.arange(STOCKS)))
        last = ticks.message([0])
        last.watermark_us = 10 * STEP_US  # closes every open step up to step 10
        counts += ingestor.apply(last)
        await publisher.flush(touched=True)
        ids = np.arange(STOCKS)
        return counts, await store.read_checkpoints(ids), (await store.read(ids)).found

    counts, checkpoints, found = asyncio.run(run())
    theirs = ~sharding.owned(STOCKS, REPLICAS, 0)
    assert counts[R["not_owned"]] == 3 * theirs.sum()
    np.testing.assert_array_equal(found, ~theirs)  # windows: its own stocks, all of them
    assert [c is not None for c in checkpoints] == (~theirs).tolist()
