"""Per-stock VWAP of the current bucket, kept by a fan-out consumer off the ingest path."""

from __future__ import annotations

import numpy as np

from rtvol.features.online_batch import TRADE
from rtvol.features.spec import BUCKET_SECONDS
from services.feature.fanout import Ingested


class Vwap:
    """Sum of price x size over sum of size, per stock, since its latest bucket began."""

    def __init__(self, n_stocks: int) -> None:
        self.bucket = np.full(n_stocks, -1, np.int64)
        self.notional = np.zeros(n_stocks)
        self.volume = np.zeros(n_stocks)

    def handle(self, item: Ingested) -> None:
        b = item.batch.take(np.flatnonzero((item.reason == 0) & (item.batch.kind == TRADE)))
        if not len(b):
            return
        ids, bucket = b.stock_id, np.floor(b.time / BUCKET_SECONDS).astype(np.int64)
        newest = np.full(len(self.bucket), -1, np.int64)
        np.maximum.at(newest, ids, bucket)
        reset = newest > self.bucket  # a trade in a new bucket starts that bucket's VWAP
        self.bucket[reset], self.notional[reset], self.volume[reset] = newest[reset], 0.0, 0.0
        keep = bucket == self.bucket[ids]  # trades of an older bucket in the same batch are past
        np.add.at(self.notional, ids[keep], b.price[keep] * b.size[keep])
        np.add.at(self.volume, ids[keep], b.size[keep])

    def vwap(self, idx: np.ndarray) -> np.ndarray:
        """VWAP of each stock's current bucket; NaN before its first trade."""
        v = self.volume[idx]
        return np.divide(self.notional[idx], v, out=np.full(len(v), np.nan), where=v > 0)
