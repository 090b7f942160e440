"""Windows pushed as their newest rows (rtvol/window_rows.py) rebuild exactly the windows the
feature service holds: random feeds through the real OnlineState and WindowFeed into the
gateway's WindowMemory, beside a watcher of whole windows and one that joins midway."""

from __future__ import annotations

import asyncio
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtvol import window_rows
from rtvol.features.online import OnlineState
from rtvol.features.online_batch import UpdateBatch
from rtvol.features.spec import N_FEATURES, STEP_SECONDS, STEPS
from rtvol.services.feature.watch import Watcher, WindowFeed
from rtvol.services.gateway.memory import WindowMemory

N_STOCKS = 4
SEQ = itertools.count(1)
# (stock, seconds after the previous update): small gaps close a step now and then, large
# ones skip many steps or whole buckets (more than STEPS rows at once)
step = st.tuples(st.integers(0, N_STOCKS - 1),
                 st.one_of(st.floats(0, 3), st.floats(3, 2 * STEP_SECONDS), st.floats(400, 1500)))


def _updates(moves: list[tuple[int, float]], clock: float) -> tuple[UpdateBatch, float]:
    times = clock + np.cumsum([dt for _, dt in moves])
    n = len(moves)
    rng = np.random.default_rng(len(moves))
    bid = 1 + rng.uniform(-0.01, 0.01, n)
    cols = {"stock_id": np.array([s for s, _ in moves]), "seq": np.array([next(SEQ) for _ in moves]),
            "time": times, "kind": rng.integers(0, 2, n), "bid1": bid, "ask1": bid + 0.001,
            "bid2": bid - 0.001, "ask2": bid + 0.002, "bid_size1": rng.uniform(1, 500, n),
            "ask_size1": rng.uniform(1, 500, n), "bid_size2": rng.uniform(1, 500, n),
            "ask_size2": rng.uniform(1, 500, n), "price": bid + 0.0005, "size": rng.uniform(1, 50, n),
            "order_count": rng.integers(1, 5, n)}
    return UpdateBatch.from_columns(cols), float(times[-1])


def _drain(w: Watcher, memory: WindowMemory) -> None:
    while not w.queue.empty():
        message = w.queue.get_nowait()
        assert message is not None
        memory.hold(message)
        w.ack(message.batch)


@settings(max_examples=120, deadline=None)
@given(st.lists(st.lists(step, min_size=1, max_size=10), min_size=1, max_size=12), st.integers(0, 11))
def test_rows_rebuild_the_feature_services_windows(rounds: list[list[tuple[int, float]]], join: int) -> None:
    async def run() -> None:
        state = OnlineState(N_STOCKS)
        feed = WindowFeed(state, max_batch=3)
        # "odd": a gateway worker of shard 1 of 2, rows of its stocks only
        watchers = {"rows": feed.watch(rows=True), "whole": feed.watch(rows=False),
                    "odd": feed.watch(rows=True, shard=(1, 2))}
        memories = {name: WindowMemory(N_STOCKS) for name in ("rows", "whole", "late")}
        memories["odd"] = WindowMemory(N_STOCKS, mine=np.arange(N_STOCKS) % 2 == 1)
        clock = 0.0
        for i, moves in enumerate(rounds):
            if i == join:  # a watcher that joins now: a snapshot, then rows
                watchers["late"] = feed.watch(rows=True)
            before = state.closed.copy()
            batch, clock = _updates(moves, clock)
            state.apply(batch)
            feed.mark(np.flatnonzero(state.closed != before), 1)
            while True:  # as the service does: each acknowledgement lets waiting windows go
                feed.send()
                if all(w.queue.empty() for w in watchers.values()):
                    break
                for name, w in watchers.items():
                    _drain(w, memories[name])
            for name in watchers:
                mem = memories[name]
                held = np.flatnonzero((state.closed > 0) & mem.mine)
                assert (mem.version[held] == state.closed[held]).all(), name
                np.testing.assert_array_equal(mem.windows[held], state.windows(held), err_msg=name)
    asyncio.run(run())


def test_rows_that_start_after_the_version_held_are_refused_before_anything_changes() -> None:
    held = np.arange(2 * STEPS * N_FEATURES, dtype=np.float32).reshape(2, STEPS, N_FEATURES)
    new = np.ones((2, N_FEATURES), np.float32)
    with pytest.raises(window_rows.RowsGap):
        window_rows.apply(held, np.array([5, 5]), new, np.array([1, 1]), np.array([6, 7]))
    # a whole window needs nothing held
    whole = np.full((STEPS, N_FEATURES), 3, np.float32)
    got = window_rows.apply(held[:1], np.array([0]), whole, np.array([STEPS]), np.array([99]))
    np.testing.assert_array_equal(got[0], whole)


def test_a_gateway_memory_refuses_a_gapped_batch_whole() -> None:
    mem = WindowMemory(2)
    state = OnlineState(2)
    feed = WindowFeed(state, max_batch=10)
    w = feed.watch(rows=True)
    batch, _ = _updates([(0, 1.0), (1, 1.0), (0, 30.0), (1, 30.0)], 0.0)
    state.apply(batch)
    feed.mark(np.array([0, 1]), 1)
    feed.send()
    message = w.queue.get_nowait()
    assert message is not None and list(message.rows) and len(message.windows) < 2 * STEPS * N_FEATURES * 4
    message.version[1] += 5  # rows the memory cannot place
    before = mem.windows.copy(), mem.version.copy()
    with pytest.raises(window_rows.RowsGap):
        mem.hold(message)
    assert (mem.windows == before[0]).all() and (mem.version == before[1]).all()
