"""Property test: random (often invalid) update sequences never corrupt the online state."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from rtvol.features.online import OnlineState
from rtvol.features.online_batch import BOOK, UpdateBatch
from rtvol.features.spec import STEP_SECONDS

N_STOCKS = 3
price = st.one_of(st.floats(0.99, 1.01), st.sampled_from([0.0, -1.0, float("nan"), float("inf")]))
size = st.one_of(st.floats(1, 500), st.sampled_from([0.0, -5.0, float("nan")]))
update = st.fixed_dictionaries({
    "stock_id": st.integers(-1, N_STOCKS), "seq": st.integers(-1, 12), "time": st.floats(0, 1500),
    "kind": st.integers(-1, 1), "bid1": price, "ask1": price, "bid2": price, "ask2": price,
    "bid_size1": size, "ask_size1": size, "bid_size2": size, "ask_size2": size,
    "price": price, "size": size, "order_count": st.integers(-1, 5)})


def _batch(rows: list[dict]) -> UpdateBatch:
    return UpdateBatch.from_columns({k: np.array([r[k] for r in rows]) for k in rows[0]})


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(update, min_size=1, max_size=12), min_size=1, max_size=6),
       st.lists(st.floats(0, 1500), max_size=3))
def test_random_updates_keep_the_state_consistent(batches: list[list[dict]], clocks: list[float]) -> None:
    state, replica = OnlineState(N_STOCKS), OnlineState(N_STOCKS)
    for i, rows in enumerate(batches):
        b = _batch(rows)
        closed_before = state.closed.copy()
        reason = state.apply(b)
        ok = reason == 0
        # only accepted updates touch the state: feeding just those to a replica gives the same state
        assert (replica.apply(b.take(ok)) == 0).all()
        if i < len(clocks):
            state.advance(clocks[i])
            replica.advance(clocks[i])
        np.testing.assert_array_equal(state.ring, replica.ring)
        np.testing.assert_array_equal(state.seq, replica.seq)
        assert np.isfinite(state.ring).all() and np.isfinite(state.acc).all()
        assert (state.closed >= closed_before).all()
        for s in np.unique(b.stock_id[ok]):
            mine = b.seq[ok & (b.stock_id == s)]
            assert (np.diff(mine) > 0).all() and state.seq[s] == mine[-1]  # strictly increasing
        seen = state.step >= 0
        assert (state.step[seen] >= np.floor(state.time[seen] / STEP_SECONDS)).all()
        assert (state.head >= 0).all() and (state.head < state.ring.shape[1]).all()
        # accepted books are valid books
        books = ok & (b.kind == BOOK)
        assert (b.bid1[books] < b.ask1[books]).all() and (b.bid_size1[books] > 0).all()
