"""Vectorised numpy reference: windows for many buckets at once.

Input rows are Optiver book/trade rows tagged with a bucket index ``group`` (one group per
(stock_id, time_id)) and sorted by (group, seconds_in_bucket). Output: float32 windows
``[n_groups, STEPS, N_FEATURES]`` with the meaning given in :mod:`rtvol.features.spec`.
No Python loop runs per row: everything is bincount / cumulative maxima over arrays.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from rtvol.features.spec import INDEX, N_FEATURES, STEP_SECONDS, STEPS

Columns = Mapping[str, np.ndarray]


def wap(bid: np.ndarray, ask: np.ndarray, bid_size: np.ndarray, ask_size: np.ndarray) -> np.ndarray:
    """Optiver's weighted average price: each side's price weighted by the *other* side's size."""
    bid, ask = np.asarray(bid, np.float64), np.asarray(ask, np.float64)
    bid_size, ask_size = np.asarray(bid_size, np.float64), np.asarray(ask_size, np.float64)
    return (bid * ask_size + ask * bid_size) / (bid_size + ask_size)


def log_returns_within(values: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Log returns between consecutive rows of the same group; a group's first row gets 0."""
    out = np.zeros(len(values), np.float64)
    if len(values) > 1:
        logs = np.log(values)
        same = group[1:] == group[:-1]
        out[1:] = np.where(same, logs[1:] - logs[:-1], 0.0)
    return out


def realized_volatility(values: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """RV = sqrt(sum r^2) of within-group log returns, per group (Optiver's target)."""
    r = log_returns_within(values, group)
    return np.sqrt(np.bincount(group, weights=r * r, minlength=n_groups))


def _step_cells(group: np.ndarray, seconds: np.ndarray) -> np.ndarray:
    step = np.minimum(np.asarray(seconds, np.int64) // STEP_SECONDS, STEPS - 1)
    return np.asarray(group, np.int64) * STEPS + step


def _close_state(cells: np.ndarray, values: dict[str, np.ndarray], n_cells: int) -> dict[str, np.ndarray]:
    """Value after the last row at or before each step's end, carried forward in the bucket."""
    last = np.ones(len(cells), bool)
    last[:-1] = cells[1:] != cells[:-1]
    has = np.zeros(n_cells, bool)
    has[cells[last]] = True
    steps = np.arange(n_cells).reshape(-1, STEPS) % STEPS
    source = np.maximum.accumulate(np.where(has.reshape(-1, STEPS), steps, -1), axis=1)
    seen = source >= 0
    rows = np.arange(source.shape[0])[:, None] * STEPS + np.maximum(source, 0)
    out = {}
    for name, v in values.items():
        at_close = np.zeros(n_cells, np.float64)
        at_close[cells[last]] = v[last]
        out[name] = np.where(seen, at_close[rows], 0.0).reshape(-1)
    return out


def compute_windows(n_groups: int, book: Columns, book_group: np.ndarray,
                    trade: Columns, trade_group: np.ndarray) -> np.ndarray:
    """Windows for ``n_groups`` buckets from their book and trade rows."""
    n_cells = n_groups * STEPS
    out = np.zeros((n_groups, STEPS, N_FEATURES), np.float64)

    def put(name: str, v: np.ndarray) -> None:
        out[:, :, INDEX[name]] = v.reshape(n_groups, STEPS)

    bg = np.asarray(book_group, np.int64)
    cells = _step_cells(bg, book["seconds_in_bucket"])
    w1 = wap(book["bid_price1"], book["ask_price1"], book["bid_size1"], book["ask_size1"])
    w2 = wap(book["bid_price2"], book["ask_price2"], book["bid_size2"], book["ask_size2"])
    r1, r2 = log_returns_within(w1, bg), log_returns_within(w2, bg)
    put("wap1_rv", np.sqrt(np.bincount(cells, weights=r1 * r1, minlength=n_cells)))
    put("wap2_rv", np.sqrt(np.bincount(cells, weights=r2 * r2, minlength=n_cells)))
    put("wap1_return", np.bincount(cells, weights=r1, minlength=n_cells))
    put("book_updates", np.log1p(np.bincount(cells, minlength=n_cells)))

    bid1 = np.asarray(book["bid_price1"], np.float64)
    ask1 = np.asarray(book["ask_price1"], np.float64)
    bid_depth = np.asarray(book["bid_size1"], np.float64) + np.asarray(book["bid_size2"], np.float64)
    ask_depth = np.asarray(book["ask_size1"], np.float64) + np.asarray(book["ask_size2"], np.float64)
    total = bid_depth + ask_depth
    close = _close_state(cells, {
        "spread": ask1 / bid1 - 1.0,
        "wap_balance": w1 / w2 - 1.0,
        "depth_imbalance": (bid_depth - ask_depth) / total,
        "log_book_size": np.log1p(total),
        "mid": (bid1 + ask1) / 2.0,
    }, n_cells)
    for name in ("spread", "wap_balance", "depth_imbalance", "log_book_size"):
        put(name, close[name])

    tg = np.asarray(trade_group, np.int64)
    tcells = _step_cells(tg, trade["seconds_in_bucket"])
    size = np.asarray(trade["size"], np.float64)
    volume = np.bincount(tcells, weights=size, minlength=n_cells)
    notional = np.bincount(tcells, weights=size * np.asarray(trade["price"], np.float64),
                           minlength=n_cells)
    put("trade_volume", np.log1p(volume))
    put("trade_count", np.log1p(np.bincount(tcells, minlength=n_cells)))
    put("order_count", np.log1p(np.bincount(
        tcells, weights=np.asarray(trade["order_count"], np.float64), minlength=n_cells)))
    mid = close["mid"]
    priced = (volume > 0) & (mid > 0)
    premium = np.zeros(n_cells)
    premium[priced] = notional[priced] / volume[priced] / mid[priced] - 1.0
    put("vwap_premium", premium)
    return out.astype(np.float32)


def bucket_rv(windows: np.ndarray) -> np.ndarray:
    """Realized volatility of each whole bucket, recovered exactly from its window."""
    return rv_of_steps(windows[..., INDEX["wap1_rv"]])


def rv_of_steps(step_rv: np.ndarray) -> np.ndarray:
    """RV over consecutive steps (last axis) from each step's ``wap1_rv``: sqrt(sum r^2) of
    all their returns, the target's definition (the live scorer's realized value too)."""
    rv = np.asarray(step_rv, np.float64)
    return np.sqrt(np.sum(rv * rv, axis=-1))
