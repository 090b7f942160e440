"""The feature service's background volatility estimate: an EWMA of each stock's squared step
RV, scaled to a bucket, computed without BLAS (whose threads spin on a many-core host)."""

from __future__ import annotations

import numpy as np

from rtvol.features.spec import INDEX, N_FEATURES, STEPS
from rtvol.services.feature.estimates import ewma_vol


def test_ewma_vol_weighs_the_newest_step_most_and_matches_the_definition() -> None:
    rng = np.random.default_rng(0)
    windows = rng.random((20_000, STEPS, N_FEATURES)).astype(np.float32)  # past OpenBLAS's threading size
    halflife = 8.0
    got = ewma_vol(windows, halflife)
    rv2 = windows[:, :, INDEX["wap1_rv"]].astype(np.float64) ** 2
    w = 0.5 ** (np.arange(STEPS)[::-1] / halflife)
    expected = np.sqrt(STEPS * np.array([float(np.dot(r, w)) for r in rv2[:50]]) / w.sum())
    np.testing.assert_allclose(got[:50], expected, rtol=1e-6)
    assert got.dtype == np.float32 and got.shape == (20_000,)
    one = np.zeros((2, STEPS, N_FEATURES), np.float32)
    one[0, -1, INDEX["wap1_rv"]] = one[1, 0, INDEX["wap1_rv"]] = 0.01  # the newest step, the oldest
    newest, oldest = ewma_vol(one, halflife)
    assert newest > oldest > 0
