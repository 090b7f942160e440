"""Parity: the online state replayed update by update gives the offline windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers.devices import device_param

from rtvol.features.online_batch import UpdateBatch
from rtvol.features.online_cuda import online_state
from rtvol.features.online_replay import merge, stock_updates
from rtvol.features.spec import BUCKET_SECONDS, STEPS
from rtvol.training import dataset, optiver

TOL = {"rtol": 1e-5, "atol": 1e-6}
UPDATE_BY_UPDATE_BUCKETS = 8


def _columns(table) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    return {c: table.column(c).to_numpy() for c in table.column_names}


@pytest.fixture(scope="module")
def replay(tiny_data: Path) -> tuple[UpdateBatch, dict[int, np.ndarray], np.ndarray]:
    """All updates of the tiny dataset in event-time order, and each stock's offline windows."""
    stocks = optiver.stock_ids(tiny_data)
    time_ids = np.arange(40)
    offline = {s: dataset.stock_windows(tiny_data, s, time_ids) for s in stocks}
    parts = [stock_updates(s, _columns(optiver.read_book(tiny_data, s)),
                           _columns(optiver.read_trade(tiny_data, s))) for s in stocks]
    return merge(parts), offline, np.asarray(stocks)


def _bucket_slices(batch: UpdateBatch) -> list[tuple[int, np.ndarray]]:
    bucket = (batch.time // BUCKET_SECONDS).astype(np.int64)
    return [(int(b), np.flatnonzero(bucket == b)) for b in np.unique(bucket)]


@device_param
def test_windows_at_every_bucket_close_match_offline_update_by_update(replay, device: str) -> None:  # type: ignore[no-untyped-def]
    batch, offline, stocks = replay
    state = online_state(int(stocks.max()) + 1, device=device)
    checked = 0
    # single updates cost ~100 µs of numpy overhead each: replay the first buckets this way
    # (the batched test below covers all 40)
    for bucket, rows in _bucket_slices(batch)[:UPDATE_BY_UPDATE_BUCKETS]:
        for i in rows:  # one update at a time: the streaming path
            reason = state.apply(batch.take(np.array([i])))
            assert reason[0] == 0
        state.advance((bucket + 1) * BUCKET_SECONDS)  # the feed's clock passes the bucket end
        got = state.windows(stocks)
        for k, s in enumerate(stocks):
            np.testing.assert_allclose(got[k], offline[int(s)][bucket], **TOL)
            checked += 1
    assert checked == len(stocks) * UPDATE_BY_UPDATE_BUCKETS


@device_param
def test_batched_windows_at_every_close_and_mid_bucket_span_two_buckets(replay, device: str) -> None:  # type: ignore[no-untyped-def]
    batch, offline, stocks = replay
    state = online_state(int(stocks.max()) + 1, device=device)
    half = STEPS // 2
    for bucket, rows in _bucket_slices(batch):
        # whole-bucket batches: many rounds of one update per stock
        first_half = rows[batch.time[rows] % BUCKET_SECONDS < half * 12]
        assert (state.apply(batch.take(first_half)) == 0).all()
        state.advance(bucket * BUCKET_SECONDS + half * 12)
        if bucket > 0:
            expect = np.concatenate([np.stack([offline[int(s)][bucket - 1][half:] for s in stocks]),
                                     np.stack([offline[int(s)][bucket][:half] for s in stocks])], axis=1)
            np.testing.assert_allclose(state.windows(stocks), expect, **TOL)
        assert (state.apply(batch.take(np.setdiff1d(rows, first_half))) == 0).all()
        state.advance((bucket + 1) * BUCKET_SECONDS)
        np.testing.assert_allclose(state.windows(stocks),
                                   np.stack([offline[int(s)][bucket] for s in stocks]), **TOL)


@device_param
def test_own_update_in_next_bucket_closes_the_bucket_without_a_clock(replay, device: str) -> None:  # type: ignore[no-untyped-def]
    batch, offline, stocks = replay
    one = batch.take(np.flatnonzero(batch.stock_id == stocks[0]))
    state = online_state(int(stocks.max()) + 1, device=device)
    b0 = one.time < BUCKET_SECONDS
    state.apply(one.take(b0))
    # a first update of bucket 1 exactly at its start closes bucket 0's last step
    nxt = one.take(np.flatnonzero(~b0)[:1])
    nxt.time[:] = BUCKET_SECONDS
    assert state.apply(nxt)[0] == 0
    np.testing.assert_allclose(state.windows(stocks[:1])[0], offline[int(stocks[0])][0], **TOL)
    # a gap of more than a window leaves only empty rows
    later = one.take(np.flatnonzero(~b0)[1:2])
    later.time[:] = 10 * BUCKET_SECONDS
    assert state.apply(later)[0] == 0
    assert not state.windows(stocks[:1]).any()
