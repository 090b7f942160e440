"""Risk alerts from the ingested stream: volatility spike, crossed book, stale feed.

A fan-out consumer (its own thread and queue). Each alert kind found in a batch is one
JSON message ``{"kind", "stock_ids", "at_us"}`` handed to ``publish`` (Redis PUBLISH on
ALERT_CHANNEL in the service) and counted in ``rtvol_feature_alerts_total{kind}``.
* crossed_book: a book update rejected as crossed (bid above ask);
* volatility_spike: a WAP1 log return larger than ``spike_sigmas`` times the stock's EWMA
  return volatility, once ``warmup`` returns have been seen;
* stale_feed: a stock that updated before has had no accepted update for
  ``stale_after_s`` seconds of wall time (once per episode; checked when the queue idles).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import numpy as np

from rtvol.features.online import rounds
from rtvol.features.online_batch import BOOK, R
from rtvol.featurestore import now_us
from rtvol.services.feature import metrics
from rtvol.services.feature.fanout import Ingested

ALERT_CHANNEL = "rtvol:alerts"


class Alerts:
    def __init__(self, n_stocks: int, publish: Callable[[bytes], object], spike_sigmas: float = 6.0,
                 halflife_updates: float = 50.0, warmup: int = 20, stale_after_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.publish, self.spike_sigmas, self.warmup = publish, spike_sigmas, warmup
        self.stale_after_s, self.clock = stale_after_s, clock
        self.decay = 0.5 ** (1.0 / halflife_updates)
        self.log_wap = np.full(n_stocks, np.nan)  # last WAP1 (log) per stock; NaN before any
        self.var = np.zeros(n_stocks)  # EWMA of squared returns
        self.returns = np.zeros(n_stocks, np.int64)
        self.last_seen = np.full(n_stocks, -np.inf)  # monotonic seconds of the last accepted update
        self.stale = np.zeros(n_stocks, bool)

    def _send(self, kind: str, ids: np.ndarray) -> None:
        if len(ids):
            ids = np.unique(ids)
            self.publish(json.dumps({"kind": kind, "stock_ids": ids.tolist(), "at_us": now_us()}).encode())
            metrics.ALERTS.labels(kind).inc(len(ids))

    def handle(self, item: Ingested) -> None:
        b, reason = item.batch, item.reason
        self._send("crossed_book", b.stock_id[reason == R["crossed_book"]])
        ok = reason == 0
        self.last_seen[b.stock_id[ok]] = item.wall_s
        self.stale[b.stock_id[ok]] = False
        book = b.select(ok & (b.kind == BOOK))
        w1 = (book.bid1 * book.ask_size1 + book.ask1 * book.bid_size1) / (book.bid_size1 + book.ask_size1)
        log_w = np.log(w1)
        spikes = [self._returns(book.stock_id[rnd], log_w[rnd]) for rnd in rounds(book.stock_id)]
        self._send("volatility_spike", np.concatenate(spikes) if spikes else np.zeros(0, np.int64))

    def _returns(self, idx: np.ndarray, log_w: np.ndarray) -> np.ndarray:
        """One update per stock: test the return against the old EWMA, then fold it in."""
        r = log_w - self.log_wap[idx]  # NaN for a stock's first snapshot
        self.log_wap[idx] = log_w
        has = np.isfinite(r)
        idx, r = idx[has], r[has]
        spike = (self.returns[idx] >= self.warmup) & (r * r > self.spike_sigmas ** 2 * self.var[idx])
        self.var[idx] = self.decay * self.var[idx] + (1 - self.decay) * r * r
        self.returns[idx] += 1
        return idx[spike]

    def tick(self) -> None:
        seen = np.isfinite(self.last_seen)
        late = np.flatnonzero(seen & ~self.stale & (self.clock() - self.last_seen > self.stale_after_s))
        self.stale[late] = True
        self._send("stale_feed", late)
