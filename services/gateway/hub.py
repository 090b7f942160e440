"""Pushes fresh signals to Subscribe streams; a slow subscriber never slows the others nor the
pipeline, and loses only signals that a newer one of the same stock replaced before it took
them (conflation, counted): it always gets each stock's newest signal. A bound on signals
queued drops a stock's newest one whenever more stocks change at once than it holds (8,000
stocks at 200,000 updates/s against the 4,096 it held), and that stock reads stale until its
next window; keyed by stock, what waits is at most one signal a stock.
"""

from __future__ import annotations

import asyncio

from rtvol.services.gateway import metrics
from rtvol.services.gateway.signal import Signal


class Subscription:
    def __init__(self, stock_ids: frozenset[int] | None, hops: bool = False) -> None:
        self.stock_ids = stock_ids  # None: all
        self.hops = hops  # each signal carries its pipeline hops (rtvol/pipeline_hops.py)
        self.pending: dict[int, Signal] = {}  # per stock, the newest signal not taken yet
        self.ended = False
        self._ready = asyncio.Event()

    def offer(self, sig: Signal | None) -> None:
        """Queue ``sig`` (None: the stream ends after what waits)."""
        if sig is None:
            self.ended = True
        elif self.stock_ids is None or sig.stock_id in self.stock_ids:
            if self.pending.pop(sig.stock_id, None) is not None:  # re-inserted: kept in arrival order
                metrics.PUSH_DROPPED.inc()
            self.pending[sig.stock_id] = sig
        else:
            return
        self._ready.set()

    async def take(self) -> list[Signal] | None:
        """Every signal waiting (at least one, waited for); None: the stream ends."""
        while not self.pending:
            if self.ended:
                return None
            await self._ready.wait()
            self._ready.clear()
        out = list(self.pending.values())
        self.pending.clear()
        return out


class Hub:
    def __init__(self) -> None:
        self.subscriptions: set[Subscription] = set()
        self.wants_hops = False  # some subscription asked for the pipeline's hops

    def subscribe(self, stock_ids: frozenset[int] | None, hops: bool = False) -> Subscription:
        sub = Subscription(stock_ids, hops)
        self.subscriptions.add(sub)
        self.wants_hops = self.wants_hops or hops
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self.subscriptions.discard(sub)
        self.wants_hops = any(s.hops for s in self.subscriptions)

    def close(self) -> None:
        """End every stream (on drain): a subscriber reconnects to a replica that is serving."""
        for sub in self.subscriptions:
            sub.offer(None)

    def publish(self, signals: list[Signal]) -> None:
        for sub in self.subscriptions:
            for sig in signals:
                sub.offer(sig)
