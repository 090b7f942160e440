"""Turn Optiver book/trade rows into time-ordered update batches (replay, tests, benchmarks)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from rtvol.features.online_batch import BOOK, TRADE, UpdateBatch
from rtvol.features.spec import BUCKET_SECONDS

Columns = Mapping[str, np.ndarray]

BOOK_MAP = {"bid1": "bid_price1", "ask1": "ask_price1", "bid2": "bid_price2", "ask2": "ask_price2",
            "bid_size1": "bid_size1", "ask_size1": "ask_size1", "bid_size2": "bid_size2",
            "ask_size2": "ask_size2"}
TRADE_MAP = {"price": "price", "size": "size", "order_count": "order_count"}


def _rows(stock_id: int, cols: Columns, kind: int, mapping: Mapping[str, str]) -> dict[str, np.ndarray]:
    n = len(cols["time_id"])
    time = (np.asarray(cols["time_id"], np.float64) * BUCKET_SECONDS
            + np.asarray(cols["seconds_in_bucket"], np.float64))
    out: dict[str, np.ndarray] = {"stock_id": np.full(n, stock_id, np.int64), "time": time,
           "kind": np.full(n, kind, np.int8)}
    out |= {dst: np.asarray(cols[src], np.float64) for dst, src in mapping.items()}
    return out


def stock_updates(stock_id: int, book: Columns, trade: Columns) -> UpdateBatch:
    """One stock's updates ordered by event time (book before trade at equal times), seq 0..n-1."""
    parts = [_rows(stock_id, book, BOOK, BOOK_MAP), _rows(stock_id, trade, TRADE, TRADE_MAP)]
    names = {k for p in parts for k in p}
    cols = {k: np.concatenate([p.get(k, np.zeros(len(p["time"]))) for p in parts]) for k in names}
    order = np.lexsort((cols["kind"], cols["time"]))
    cols = {k: v[order] for k, v in cols.items()}
    cols["seq"] = np.arange(len(order), dtype=np.int64)
    return UpdateBatch.from_columns(cols)


def merge(batches: Sequence[UpdateBatch]) -> UpdateBatch:
    """Interleave several stocks' updates by event time (stable: per-stock order kept)."""
    cols = {f: np.concatenate([getattr(b, f) for b in batches]) for f in UpdateBatch.__dataclass_fields__}
    order = np.argsort(cols["time"], kind="stable")
    return UpdateBatch.from_columns({k: v[order] for k, v in cols.items()})


def snapshot_batches(n_stocks: int, rounds: int, seed: int = 0) -> list[UpdateBatch]:
    """One update per stock per round (90% book, 10% trade), one second apart: a market snapshot."""
    rng = np.random.default_rng(seed)
    mid = np.ones(n_stocks)
    out = []
    for r in range(rounds):
        mid *= np.exp(rng.normal(0, 1e-4, n_stocks))
        half = mid * 5e-5
        kind = np.where(rng.random(n_stocks) < 0.9, BOOK, TRADE)
        sizes = rng.integers(10, 500, (4, n_stocks)).astype(np.float64)
        out.append(UpdateBatch.from_columns({
            "stock_id": np.arange(n_stocks), "time": np.full(n_stocks, float(r)), "seq": np.full(n_stocks, r),
            "kind": kind, "bid1": mid - half, "ask1": mid + half,
            "bid2": mid - 3 * half, "ask2": mid + 3 * half,
            "bid_size1": sizes[0], "ask_size1": sizes[1], "bid_size2": sizes[2], "ask_size2": sizes[3],
            "price": mid, "size": sizes[0], "order_count": np.ones(n_stocks)}))
    return out
