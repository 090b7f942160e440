"""The apply path's shortcuts give what the general code gives: rounds of a batch of distinct
stocks, the first failing check's reason, a select that keeps every row, short columns read
with np.fromiter."""

from __future__ import annotations

import numpy as np
import pytest

from rtvol.features.online import rounds
from rtvol.features.online_batch import FIELDS, R, UpdateBatch, first_reasons
from rtvol.ingest_codec import FROMITER_MAX, decode
from rtvol.proto.v1 import features_pb2 as pb


def _rounds_by_hand(stock: np.ndarray) -> list[list[int]]:
    """Round r: each stock's r-th row, ordered by stock id (ties cannot happen in a round)."""
    seen: dict[int, int] = {}
    by_round: dict[int, list[int]] = {}
    for pos, s in enumerate(stock.tolist()):
        r = seen.get(s, 0)
        seen[s] = r + 1
        by_round.setdefault(r, []).append(pos)
    return [sorted(rows, key=lambda p: (stock[p], p)) for _, rows in sorted(by_round.items())]


@pytest.mark.parametrize("stock", [
    [], [7], [3, 1, 2], list(range(100)), [5, 5], [2, 1, 2, 0, 1, 2], [9, 0, 9, 9, 3],
    np.random.default_rng(0).integers(0, 20, 200).tolist(),
    np.random.default_rng(1).permutation(500).tolist(),
])
def test_rounds_distinct_stocks_or_not(stock: list[int]) -> None:
    got = [r.tolist() for r in rounds(np.asarray(stock, np.int64))]
    assert got == _rounds_by_hand(np.asarray(stock, np.int64))
    assert len(got) == (max(np.unique(stock, return_counts=True)[1]) if stock else 0)


def test_first_reasons_takes_the_first_failing_check_per_row() -> None:
    a = np.array([True, False, False, True])
    b = np.array([True, True, False, False])
    assert first_reasons(4, [(a, "malformed"), (b, "late")]).tolist() == [R["malformed"], R["late"], 0,
                                                                         R["malformed"]]
    none = np.zeros(4, bool)
    assert first_reasons(4, [(none, "malformed"), (none, "late")]).tolist() == [0, 0, 0, 0]
    assert first_reasons(0, [(np.zeros(0, bool), "late")]).tolist() == []


def _batch(n: int) -> UpdateBatch:
    return UpdateBatch.from_columns({"stock_id": np.arange(n), "time": np.arange(n) * 1.0,
                                     "seq": np.arange(n), "bid1": np.arange(n) + 1.0})


@pytest.mark.parametrize("index", [np.ones(5, bool), np.arange(5)])
def test_select_keeping_every_row_in_order_is_the_batch_itself(index: np.ndarray) -> None:
    b = _batch(5)
    assert b.select(index) is b


@pytest.mark.parametrize("index", [np.array([True, False, True, True, True]), np.array([1, 0, 2, 3, 4]),
                                   np.array([0, 1, 2]), np.zeros(5, bool)])
def test_select_leaving_rows_out_or_reordering_them_copies_like_take(index: np.ndarray) -> None:
    b = _batch(5)
    got, want = b.select(index), b.take(index)
    assert got is not b
    for f in FIELDS:
        np.testing.assert_array_equal(getattr(got, f), getattr(want, f), err_msg=f)


@pytest.mark.parametrize("n", [1, FROMITER_MAX, FROMITER_MAX + 1, 100])
def test_short_and_long_columns_decode_to_the_same_values(n: int) -> None:
    rng = np.random.default_rng(n)
    prices = rng.uniform(1, 200, n)
    prices[0] = np.nan  # hostile values pass through decode unchanged, to be rejected by the checks
    if n > 1:
        prices[1] = np.inf
    times = rng.integers(0, 2**62, n)
    cols = pb.UpdateColumns(stock_id=rng.integers(-5, 2**31 - 1, n).tolist(), event_time_us=times.tolist(),
                            sequence=rng.integers(-(2**62), 2**62, n).tolist(),
                            kind=rng.integers(-3, 3, n).tolist(),
                            bid_price1=prices.tolist(), ask_size2=(prices * 2).tolist())
    b = decode(pb.IngestRequest(columns=cols))
    np.testing.assert_array_equal(b.stock_id, np.array(cols.stock_id, np.int64))
    np.testing.assert_array_equal(b.seq, np.array(cols.sequence, np.int64))
    np.testing.assert_array_equal(b.time, np.array(cols.event_time_us, np.float64) / 1e6)
    kind = np.array(cols.kind)
    np.testing.assert_array_equal(b.kind, np.where((kind == 0) | (kind == 1), kind, -1))
    np.testing.assert_array_equal(b.bid1, prices)
    np.testing.assert_array_equal(b.ask_size2, prices * 2)
    np.testing.assert_array_equal(b.price, np.zeros(n))  # an empty column: zeros
