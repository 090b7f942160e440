"""WAP, RV, targets and the window features against numbers computed by hand."""

import numpy as np
import pytest

from rtvol.features import offline, spec, targets

# Two buckets (groups). Group 0 has three snapshots in step 0 and one in step 2; group 1
# has a single snapshot at second 0.
BOOK = {
    "seconds_in_bucket": np.array([0, 5, 11, 30, 0]),
    "bid_price1": np.array([1.00, 1.00, 1.01, 1.00, 0.99]),
    "ask_price1": np.array([1.02, 1.02, 1.02, 1.01, 1.01]),
    "bid_price2": np.array([0.99, 0.99, 1.00, 0.99, 0.98]),
    "ask_price2": np.array([1.03, 1.03, 1.03, 1.02, 1.02]),
    "bid_size1": np.array([100, 300, 100, 50, 10]),
    "ask_size1": np.array([100, 100, 100, 150, 30]),
    "bid_size2": np.array([10, 10, 10, 10, 10]),
    "ask_size2": np.array([10, 10, 10, 10, 10]),
}
BOOK_GROUP = np.array([0, 0, 0, 0, 1])
TRADE = {"seconds_in_bucket": np.array([3, 7, 40]), "price": np.array([1.01, 1.02, 1.005]),
         "size": np.array([10, 30, 5]), "order_count": np.array([1, 2, 1])}
TRADE_GROUP = np.array([0, 0, 0])


def test_wap_is_optivers_definition() -> None:
    # (bid1 * ask_size1 + ask1 * bid_size1) / (bid_size1 + ask_size1)
    assert offline.wap(1.00, 1.02, 300, 100) == pytest.approx((1.00 * 100 + 1.02 * 300) / 400)


def test_realized_volatility_by_hand() -> None:
    w = offline.wap(BOOK["bid_price1"], BOOK["ask_price1"], BOOK["bid_size1"], BOOK["ask_size1"])
    # by hand: 1.01, 1.015, 1.015, 1.0025, then group 1 alone
    assert w[:4] == pytest.approx([1.01, 1.015, 1.015, 1.0025])
    rv = offline.realized_volatility(w, BOOK_GROUP, 2)
    r = [np.log(1.015 / 1.01), 0.0, np.log(1.0025 / 1.015)]
    assert rv[0] == pytest.approx(np.sqrt(sum(x * x for x in r)))
    assert rv[1] == 0.0  # a single snapshot has no return


def test_targets_by_hand() -> None:
    z = targets.move_score(np.array([-0.02, 0.001, 0.03, 0.5]), np.array([0.01, 0.01, 0.01, 0.0]))
    assert z == pytest.approx([-2.0, 0.1, 3.0, 0.0])  # zero RV gives no move
    assert targets.direction_class(z).tolist() == [0, 1, 2, 1]
    assert targets.momentum(z) == pytest.approx(np.tanh([-2.0, 0.1, 3.0, 0.0]))


def test_window_features_by_hand() -> None:
    w = offline.compute_windows(2, BOOK, BOOK_GROUP, TRADE, TRADE_GROUP)
    assert w.shape == (2, spec.STEPS, spec.N_FEATURES) and w.dtype == np.float32
    f = spec.INDEX
    r1 = np.log(1.015 / 1.01)
    assert w[0, 0, f["wap1_rv"]] == pytest.approx(abs(r1), rel=1e-6)
    assert w[0, 0, f["wap1_return"]] == pytest.approx(r1, rel=1e-6)
    assert w[0, 0, f["book_updates"]] == pytest.approx(np.log1p(3))
    # step 1 has no snapshot: no activity, close state carried from step 0
    assert w[0, 1, f["wap1_rv"]] == 0.0 and w[0, 1, f["book_updates"]] == 0.0
    assert w[0, 1, f["spread"]] == pytest.approx(1.02 / 1.01 - 1)
    # step 2 closes on the snapshot at second 30
    assert w[0, 2, f["spread"]] == pytest.approx(1.01 / 1.00 - 1, rel=1e-5)
    assert w[0, 2, f["depth_imbalance"]] == pytest.approx((60 - 160) / 220, rel=1e-6)
    assert w[0, 2, f["wap1_rv"]] == pytest.approx(abs(np.log(1.0025 / 1.015)), rel=1e-6)
    # trades: step 0 has two rows, VWAP (1.01*10 + 1.02*30) / 40 over the close mid 1.015
    assert w[0, 0, f["trade_count"]] == pytest.approx(np.log1p(2))
    assert w[0, 0, f["trade_volume"]] == pytest.approx(np.log1p(40))
    assert w[0, 0, f["order_count"]] == pytest.approx(np.log1p(3))
    assert w[0, 0, f["vwap_premium"]] == pytest.approx((1.01 * 10 + 1.02 * 30) / 40 / 1.015 - 1,
                                                       rel=1e-5)
    assert w[0, 3, f["vwap_premium"]] == pytest.approx(1.005 / 1.005 - 1, abs=1e-7)
    assert w[0, 1, f["vwap_premium"]] == 0.0  # no trade in the step
    # bucket RV is recovered exactly from the window
    wap1 = offline.wap(BOOK["bid_price1"], BOOK["ask_price1"], BOOK["bid_size1"], BOOK["ask_size1"])
    assert offline.bucket_rv(w) == pytest.approx(
        offline.realized_volatility(wap1, BOOK_GROUP, 2), rel=1e-6)
    assert np.all(w[1, 1:, f["log_book_size"]] == w[1, 0, f["log_book_size"]])  # carried


def test_spec_hash_is_stable_and_sensitive() -> None:
    assert spec.spec_hash() == spec.spec_hash()
    assert len(spec.spec_hash()) == 16
    assert len(spec.FEATURE_NAMES) == spec.N_FEATURES == 12
    assert spec.STEPS * spec.STEP_SECONDS == spec.BUCKET_SECONDS
