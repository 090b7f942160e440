"""The online state rejects implausible values and clock jumps, and a checkpoint restores it exactly."""

from __future__ import annotations

import numpy as np
from helpers.devices import device_param

from rtvol.features import online_checkpoint
from rtvol.features.online import Limits, OnlineState
from rtvol.features.online_batch import REASONS, UpdateBatch
from rtvol.features.online_cuda import online_state
from rtvol.features.online_replay import snapshot_batches
from rtvol.features.spec import BUCKET_SECONDS


def _one(stock: int, seq: int, t: float, **values: float) -> UpdateBatch:
    """One book update (valid unless ``values`` say otherwise)."""
    cols = {"stock_id": stock, "seq": seq, "time": t, "kind": 0, "bid1": 0.999, "ask1": 1.001, "bid2": 0.998,
            "ask2": 1.002, "bid_size1": 10.0, "ask_size1": 10.0, "bid_size2": 10.0, "ask_size2": 10.0}
    return UpdateBatch.from_columns({k: [v] for k, v in (cols | values).items()})


def _reason(state: OnlineState, b: UpdateBatch) -> str:
    return REASONS[int(state.apply(b)[0])]


@device_param
def test_implausible_values_are_rejected_before_they_reach_the_state(device: str) -> None:
    state = online_state(2, device=device)
    assert _reason(state, _one(0, 1, 10.0)) == "ok"
    for values in ({"bid_size1": 1e308}, {"ask1": 2e9}, {"bid2": 1e-12}):
        assert _reason(state, _one(0, 2, 11.0, **values)) == "out_of_range", values
    assert _reason(state, _one(0, 2, 1e12)) == "out_of_range"
    assert _reason(state, _one(0, 2**63 - 1, 11.0)) == "out_of_range"
    assert _reason(state, _one(0, 2, 11.0, ask_size2=float("inf"))) == "non_finite"
    assert np.isfinite(state.acc).all() and state.seq[0] == 1


@device_param
def test_clock_jumps_are_rejected_and_never_adopted(device: str) -> None:
    limits = Limits(max_sequence_gap=100, max_time_ahead_s=3_600, max_watermark_ahead_s=600)
    state = online_state(3, limits, device=device)
    assert state.advance(2.0**62 / 1e6) is not None and state.clock == -np.inf  # no clock yet: ignored
    assert _reason(state, _one(0, 1, 100.0)) == "ok"
    assert _reason(state, _one(0, 500, 101.0)) == "sequence_jump"
    assert _reason(state, _one(0, 2, 100.0 + 3_601)) == "time_jump"
    assert _reason(state, _one(1, 1, 100.0 + 3_601)) == "time_jump"  # a new stock: the stream's clock
    assert state.advance(100.0 + 601) is None  # the watermark: further than 600 s past the clock
    # none of it moved a clock: the stock's next real update is neither late nor out of order
    assert _reason(state, _one(0, 3, 130.0)) == "ok"
    assert _reason(state, _one(1, 1, 131.0)) == "ok"
    closed = state.advance(BUCKET_SECONDS)  # a real watermark still closes the steps
    assert closed is not None and sorted(closed.tolist()) == [0, 1]
    assert state.clock == BUCKET_SECONDS


@device_param
def test_a_restored_checkpoint_rejects_replays_and_goes_on_like_the_original(device: str) -> None:
    batches = snapshot_batches(5, 40, seed=3)
    original = online_state(5, device=device)
    for b in batches[:25]:
        original.apply(b)
    idx = np.arange(5)
    found, records = online_checkpoint.decode([r.tobytes() for r in online_checkpoint.export(original, idx)])
    restored = online_state(5, device=device)
    online_checkpoint.restore(restored, idx[found], records)
    assert found.all() and restored.clock == original.clock
    assert (restored.apply(batches[0]) != 0).all()  # a replay: rejected after the restart as before it
    for b in batches[25:]:
        np.testing.assert_array_equal(restored.apply(b), original.apply(b))
    np.testing.assert_array_equal(restored.windows(idx), original.windows(idx))
    np.testing.assert_array_equal(restored.acc, original.acc)


@device_param
def test_a_window_without_checkpoint_keeps_its_high_water_marks(device: str) -> None:
    state = online_state(2, device=device)
    window = np.ones((1, 50, 12), np.float32)
    online_checkpoint.adopt_windows(state, np.array([1]), window, np.array([41]), np.array([1234.5]))
    assert _reason(state, _one(1, 41, 1235.0)) == "duplicate_sequence"
    assert _reason(state, _one(1, 42, 1200.0)) == "late"  # an earlier step than the stored one
    assert _reason(state, _one(1, 42, 1240.0)) == "ok"
    np.testing.assert_array_equal(state.windows(np.array([1]))[0, :-1], window[0, 1:])  # one step closed
