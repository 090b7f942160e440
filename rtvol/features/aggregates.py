"""Scalar aggregates of a window for tabular models (LightGBM, HAR).

They are computed *from the window*, so a tabular model sees nothing the CNN does not.
"""

from __future__ import annotations

import numpy as np

from rtvol.features.spec import INDEX, STEPS

# (name, first step) for realized-volatility aggregates over the tail of the bucket.
RV_TAILS: tuple[tuple[str, int], ...] = (
    ("rv_full", 0), ("rv_last_half", STEPS // 2), ("rv_last_fifth", STEPS - STEPS // 5),
    ("rv_last_tenth", STEPS - STEPS // 10),
)
MEANS = ("spread", "wap_balance", "depth_imbalance", "log_book_size", "vwap_premium")
ACTIVITY = ("book_updates", "trade_volume", "trade_count", "order_count")
AGGREGATE_NAMES: tuple[str, ...] = (
    *(n for n, _ in RV_TAILS), "rv2_full", "net_return", "max_step_rv",
    *(f"mean_{m}" for m in MEANS), *(f"total_{a}" for a in ACTIVITY),
)


def tail_rv(windows: np.ndarray, first_step: int, column: str = "wap1_rv") -> np.ndarray:
    """RV over steps ``first_step..STEPS-1``, scaled to a whole bucket's length."""
    rv = windows[:, first_step:, INDEX[column]].astype(np.float64)
    return np.sqrt(np.sum(rv * rv, axis=1) * STEPS / (STEPS - first_step))


def aggregates(windows: np.ndarray) -> np.ndarray:
    """[n, STEPS, F] windows -> [n, len(AGGREGATE_NAMES)] float64."""
    w = windows.astype(np.float64)
    cols = [tail_rv(w, first) for _, first in RV_TAILS]
    cols.append(tail_rv(w, 0, "wap2_rv"))
    cols.append(w[:, :, INDEX["wap1_return"]].sum(axis=1))
    cols.append(w[:, :, INDEX["wap1_rv"]].max(axis=1))
    cols += [w[:, :, INDEX[m]].mean(axis=1) for m in MEANS]
    # activity columns hold log1p(count); undo it to add counts over the bucket
    cols += [np.log1p(np.expm1(w[:, :, INDEX[a]]).sum(axis=1)) for a in ACTIVITY]
    return np.stack(cols, axis=1)
