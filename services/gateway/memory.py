"""The gateway's memory of the latest window of each stock (pushed by the feature service's
Watch) and of the signal computed from it.

A stock's signal is *current* when it was computed from the latest window held: a Predict for
it is then a memory read. A window newer than its signal is *dirty* until the pipeline takes
it into a batch; a Predict for it waits for that batch (services/gateway/predictor.py).
With gateway workers, each worker's Watch stream carries only the stocks of its shard
(``mine``): it holds their windows and infers them; the others' signals arrive from the worker
that infers them (services/gateway/shards.py). The version and lease of every held window are
then in the table the workers share (services/gateway/signaltable.py), each written by its
owner before the window is acknowledged, so any worker knows whether the signal it has of any
stock is current (read-your-writes), without holding the window.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import numpy as np

from rtvol import window_rows
from rtvol.features.spec import N_FEATURES, STEPS
from rtvol.featurestore import Windows, now_us
from rtvol.proto.v1 import features_pb2 as fpb
from rtvol.services.gateway import metrics
from rtvol.services.gateway.scorer import LiveScorer
from rtvol.services.gateway.signal import Signal


class WindowMemory:
    def __init__(self, stocks: int, scorer: LiveScorer | None = None, mine: np.ndarray | None = None,
                 shared: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """``mine``: the stocks whose windows this process holds and infers (None: all).
        ``shared``: the workers' shared (version, valid_until) arrays, of which this process
        writes only its own stocks' entries (None: its own arrays)."""
        self.stocks = stocks
        self.mine = np.ones(stocks, bool) if mine is None else mine
        self.scorer = scorer  # learns realized volatility from each newer window held
        self.windows = np.zeros((stocks, STEPS, N_FEATURES), np.float32)
        # of the held window; 0: none held
        self.version = np.zeros(stocks, np.int64) if shared is None else shared[0]
        self.sequence = np.zeros(stocks, np.int64)
        self.event_time_us = np.zeros(stocks, np.int64)
        self.received_us = np.zeros(stocks, np.int64)  # the feature service's receipt (0: unknown)
        # the feature service's hops after that receipt (rtvol/pipeline_hops.py): applied, stored, sent
        self.feature_hops_us = np.zeros((stocks, 3), np.int64)
        self.end_step = np.zeros(stocks, np.int64)  # global step the window ends before (0: unknown)
        self.held_us = np.zeros(stocks, np.int64)  # when this gateway got the window
        self.dirty = np.zeros(stocks, bool)  # a window newer than its signal, in no batch yet
        # in a pipeline batch whose call has not settled: not taken again until it has, so a
        # stock is never in two calls at once (its signals settle in window-version order)
        self.busy = np.zeros(stocks, bool)
        # monotonic time until which the Watch stream of the stock's feature replica vouches for
        # its held window (its lease; 0 while no stream delivers): past it a held window may be
        # stale (the replica applies updates no one pushes here) and Predict reads the store
        self.valid_until = np.full(stocks, np.inf) if shared is None else shared[1]
        if shared is not None:  # what a worker that held them before a restart wrote: gone with it
            self.version[self.mine] = 0
            self.valid_until[self.mine] = 0.0
        self.signals: list[Signal | None] = [None] * stocks
        # copies another worker's newest signal of a stock into ``signals`` (shards.py); None: not a worker
        self.pull: Callable[[int], None] | None = None
        self.wake = asyncio.Event()  # set when a window became dirty
        self._settled = asyncio.Event()  # set (and replaced) whenever signals were stored

    def hold(self, batch: fpb.WindowBatch) -> int:
        """Keep the windows of ``batch`` (of this process's stocks) that are newer than those
        held; returns how many.
        Windows sent as their newest rows are shifted into those held; rows that start after
        the version held raise window_rows.RowsGap, before anything is kept."""
        ids = np.asarray(batch.stock_ids, np.int64)
        version = np.asarray(batch.version, np.int64)
        known = (ids >= 0) & (ids < self.stocks)
        known[known] = self.mine[ids[known]]  # another worker holds the rest
        newer = np.flatnonzero(known)
        newer = newer[version[newer] > self.version[ids[newer]]]
        if not len(newer):
            return 0
        idx = ids[newer]
        self.windows[idx] = self._windows(batch, newer, idx, version[newer])
        self.version[idx] = version[newer]
        self.sequence[idx] = np.asarray(batch.sequence, np.int64)[newer]
        self.event_time_us[idx] = np.asarray(batch.event_time_us, np.int64)[newer]
        self.received_us[idx] = np.asarray(batch.received_us, np.int64)[newer]
        if len(batch.applied_us) == len(ids):  # a feature service older than the hop stamps sends none
            self.feature_hops_us[idx, 0] = np.asarray(batch.applied_us, np.int64)[newer]
            self.feature_hops_us[idx, 1] = np.asarray(batch.stored_us, np.int64)[newer]
            self.feature_hops_us[idx, 2] = batch.sent_us
        else:
            self.feature_hops_us[idx] = 0
        if len(batch.end_step) == len(ids):  # a feature service older than live scoring sends none
            self.end_step[idx] = np.asarray(batch.end_step, np.int64)[newer]
        if self.scorer is not None:
            self.scorer.settle(idx, self.windows[idx], self.end_step[idx])
        self.held_us[idx] = now_us()
        self.dirty[idx] = self.mine[idx]
        self.wake.set()
        return len(idx)

    def _windows(self, batch: fpb.WindowBatch, newer: np.ndarray, idx: np.ndarray, version: np.ndarray
                 ) -> np.ndarray:
        if not batch.rows:
            return np.frombuffer(batch.windows, "<f4").reshape(-1, STEPS, N_FEATURES)[newer]
        rows = np.asarray(batch.rows, np.int64)
        if len(rows) != len(batch.stock_ids):
            raise ValueError(f"{len(rows)} rows counts for {len(batch.stock_ids)} windows")
        data = np.frombuffer(batch.windows, "<f4").reshape(-1, N_FEATURES)
        if len(newer) < len(rows):  # the rows of the windows kept
            kept = np.zeros(len(rows), bool)
            kept[newer] = True
            data = data[np.repeat(kept, rows)]
        return window_rows.apply(self.windows[idx], self.version[idx], data, rows[newer], version)

    def take(self, limit: int) -> np.ndarray:
        """Up to ``limit`` dirty stocks in no unsettled batch, now part of a batch (busy until
        ``release``)."""
        idx = np.flatnonzero(self.dirty & ~self.busy)[:limit]
        self.dirty[idx] = False
        self.busy[idx] = True
        return idx

    def release(self, idx: np.ndarray) -> None:
        """The batch of ``idx`` settled: those of them that got a newer window meanwhile may
        leave in the next batch."""
        self.busy[idx] = False
        if self.dirty[idx].any():
            self.wake.set()

    def redo(self, limit: int) -> int:
        """Up to ``limit`` stocks whose current signal came from a fallback tier become dirty
        again (to be inferred anew once tier 1 is back); returns how many."""
        idx = [sid for sid, sig in enumerate(self.signals)
               if sig is not None and sig.tier > 1 and self.mine[sid] and not self.dirty[sid]
               and not self.busy[sid] and sig.window_version >= self.version[sid]][:limit]
        self.dirty[idx] = True
        return len(idx)

    def read(self, idx: np.ndarray) -> Windows:
        """The held windows of ``idx`` (a copy), written at the feature service's receipt."""
        written = np.where(self.received_us[idx] > 0, self.received_us[idx], self.held_us[idx])
        return Windows(self.windows[idx], np.ones(len(idx), bool), self.sequence[idx],
                       self.event_time_us[idx], written, self.version[idx], self.received_us[idx])

    def holds(self, sid: int) -> bool:
        if not self.version[sid]:
            return False
        until = self.valid_until[sid]
        if until > time.monotonic():
            return True
        if until:  # followed, but no message renewed the lease in time: the stream stalls
            metrics.LEASE_LAPSED.inc()
        return False

    def current(self, sid: int) -> Signal | None:
        """The signal of ``sid`` if it was computed from the latest window held."""
        sig = self.signals[sid]
        if (sig is None or sig.window_version < self.version[sid]) and self.pull is not None:
            self.pull(sid)  # another worker's stock: its signal is copied when asked for
            sig = self.signals[sid]
        return sig if sig is not None and sig.window_version >= self.version[sid] else None

    def settle(self, signals: list[Signal]) -> None:
        """Keep signals computed from held windows (an older one never replaces a newer)."""
        for sig in signals:
            held = self.signals[sig.stock_id]
            if held is None or sig.window_version >= held.window_version:
                self.signals[sig.stock_id] = sig
        event, self._settled = self._settled, asyncio.Event()
        event.set()

    async def wait_current(self, ids: list[int], timeout_s: float) -> None:
        """Until every one of ``ids`` has a current signal, or ``timeout_s`` passed."""
        if timeout_s <= 0:
            return
        try:
            async with asyncio.timeout(timeout_s):
                while any(self.current(sid) is None for sid in ids):
                    await self._settled.wait()
        except TimeoutError:
            pass
