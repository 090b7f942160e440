"""Per-stock VWAP of the current bucket, kept by a fan-out consumer off the ingest path."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from rtvol.features.online_batch import TRADE
from rtvol.features.spec import BUCKET_SECONDS
from rtvol.services.feature.fanout import Ingested


@dataclass(frozen=True)
class VwapView:
    """A consistent copy of some stocks' VWAP state (GetVwap's answer)."""

    vwap: np.ndarray  # NaN before a stock's first trade
    volume: np.ndarray
    bucket: np.ndarray  # time_id the VWAP covers; -1 before the first trade
    last_trade_us: np.ndarray  # event time of the latest trade folded in
    ingested_s: np.ndarray  # time.monotonic() when that trade was ingested; NaN before the first


class Vwap:
    """Sum of price x size over sum of size, per stock, since its latest bucket began.

    ``handle`` runs on the consumer's thread and ``view`` on the event loop: a lock keeps a
    reader from seeing a notional that already counts a trade whose size is not added yet.
    """

    def __init__(self, n_stocks: int) -> None:
        self.bucket = np.full(n_stocks, -1, np.int64)
        self.notional = np.zeros(n_stocks)
        self.volume = np.zeros(n_stocks)
        self.last_trade_us = np.zeros(n_stocks, np.int64)
        self.ingested_s = np.full(n_stocks, np.nan)
        self._lock = threading.Lock()

    def handle(self, item: Ingested) -> None:
        trades = (item.reason == 0) & (item.batch.kind == TRADE)
        if not trades.any():  # most messages: book updates only, nothing to copy
            return
        b = item.batch.take(np.flatnonzero(trades))
        ids, bucket = b.stock_id, np.floor(b.time / BUCKET_SECONDS).astype(np.int64)
        newest = np.full(len(self.bucket), -1, np.int64)
        np.maximum.at(newest, ids, bucket)
        with self._lock:
            reset = newest > self.bucket  # a trade in a new bucket starts that bucket's VWAP
            self.bucket[reset], self.notional[reset], self.volume[reset] = newest[reset], 0.0, 0.0
            self.last_trade_us[reset] = 0
            keep = bucket == self.bucket[ids]  # trades of an older bucket in the same batch are past
            np.add.at(self.notional, ids[keep], b.price[keep] * b.size[keep])
            np.add.at(self.volume, ids[keep], b.size[keep])
            np.maximum.at(self.last_trade_us, ids[keep], np.round(b.time[keep] * 1e6).astype(np.int64))
            self.ingested_s[ids[keep]] = item.wall_s

    def vwap(self, idx: np.ndarray) -> np.ndarray:
        """VWAP of each stock's current bucket; NaN before its first trade."""
        return self.view(idx).vwap

    def view(self, idx: np.ndarray) -> VwapView:
        with self._lock:
            v, notional = self.volume[idx], self.notional[idx]
            view = VwapView(np.divide(notional, v, out=np.full(len(v), np.nan), where=v > 0), v,
                            self.bucket[idx], self.last_trade_us[idx], self.ingested_s[idx])
        return view
