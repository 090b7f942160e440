"""Bootstrap intervals over time_ids: what they resample and how often they cover."""

import numpy as np
import pytest

from rtvol.training import intervals
from rtvol.training.baselines import rmspe


def _market(rng: np.random.Generator, time_ids: int, stocks: int) -> tuple[np.ndarray, ...]:
    """Targets and two predictions whose errors share a per-time_id shock."""
    tid = np.repeat(np.arange(time_ids), stocks)
    y = np.exp(rng.normal(-6, 0.3, len(tid)))
    shock = rng.normal(0, 0.2, time_ids)[tid]
    good = y * (1 + shock + rng.normal(0, 0.1, len(tid)))
    bad = y * (1 + shock + rng.normal(0, 0.3, len(tid)))
    return y, good, bad, tid


def test_estimate_is_the_full_sample_rmspe_and_a_clear_difference_excludes_zero() -> None:
    y, good, bad, tid = _market(np.random.default_rng(1), 200, 10)
    iv = intervals.bootstrap(y, {"good": good, "bad": bad}, tid, [("good", "bad")], n=500)
    assert iv["rmspe"]["good"]["estimate"] == pytest.approx(rmspe(y, good))
    for m in ("good", "bad"):
        assert iv["rmspe"][m]["low"] < iv["rmspe"][m]["estimate"] < iv["rmspe"][m]["high"]
    diff = iv["difference"]["good - bad"]
    assert diff["high"] < 0 and intervals.Interval(**diff).excludes_zero()


def test_identical_models_have_a_zero_width_difference() -> None:
    y, good, _, tid = _market(np.random.default_rng(2), 50, 4)
    iv = intervals.bootstrap(y, {"a": good, "b": good.copy()}, tid, [("a", "b")], n=200)
    assert iv["difference"]["a - b"] == {"estimate": 0.0, "low": 0.0, "high": 0.0}


def test_resamples_time_ids_not_rows() -> None:
    """Copies of a row within its time_id add no information: the interval must not narrow."""
    y, good, _, tid = _market(np.random.default_rng(3), 80, 1)
    one = intervals.bootstrap(y, {"m": good}, tid, [], n=300, seed=7)
    copies = 25
    many = intervals.bootstrap(np.repeat(y, copies), {"m": np.repeat(good, copies)},
                               np.repeat(tid, copies), [], n=300, seed=7)
    assert many["rmspe"]["m"] == pytest.approx(one["rmspe"]["m"], rel=1e-12)
    assert many["time_ids"] == 80


def test_interval_covers_the_true_rmspe_about_as_often_as_it_says() -> None:
    """Many independent markets; the true RMSPE is that of a very large draw."""
    rng = np.random.default_rng(4)
    y, good, _, _ = _market(rng, 20_000, 5)
    truth = rmspe(y, good)
    covered = 0
    trials = 150
    for _ in range(trials):
        y, good, _, tid = _market(rng, 120, 5)
        iv = intervals.bootstrap(y, {"m": good}, tid, [], n=400, seed=int(rng.integers(1 << 31)))
        covered += iv["rmspe"]["m"]["low"] <= truth <= iv["rmspe"]["m"]["high"]
    assert 0.86 <= covered / trials <= 0.99  # nominal 0.95; the percentile bootstrap runs a bit low


def test_bad_arguments_are_refused() -> None:
    y, good, _, tid = _market(np.random.default_rng(5), 20, 2)
    with pytest.raises(ValueError, match="draws"):
        intervals.bootstrap(y, {"m": good}, tid, [], n=1)
    with pytest.raises(ValueError, match="level"):
        intervals.bootstrap(y, {"m": good}, tid, [], level=95)
    with pytest.raises(ValueError, match="two seeds"):
        intervals.across_seeds([0.3])


def test_across_seeds_t_interval() -> None:
    s = intervals.across_seeds([0.30, 0.31, 0.32])
    assert s["mean"] == pytest.approx(0.31) and s["sd"] == pytest.approx(0.01)
    half = 4.302653 * 0.01 / np.sqrt(3)  # t(0.975, 2)
    assert (s["low"], s["high"]) == pytest.approx((0.31 - half, 0.31 + half), rel=1e-5)
