"""Pushes fresh signals to Subscribe streams; a slow subscriber loses its oldest signals,
never slows the others."""

from __future__ import annotations

import asyncio

from rtvol.services.gateway import metrics
from rtvol.services.gateway.signal import Signal


class Subscription:
    def __init__(self, stock_ids: frozenset[int] | None, depth: int, hops: bool = False) -> None:
        self.stock_ids = stock_ids  # None: all
        self.hops = hops  # each signal carries its pipeline hops (rtvol/pipeline_hops.py)
        self.queue: asyncio.Queue[Signal | None] = asyncio.Queue(depth)  # None: the stream ends

    def offer(self, sig: Signal | None) -> None:
        if sig is not None and self.stock_ids is not None and sig.stock_id not in self.stock_ids:
            return
        if self.queue.full():
            self.queue.get_nowait()
            metrics.PUSH_DROPPED.inc()
        self.queue.put_nowait(sig)

    async def take(self) -> list[Signal] | None:
        """Every signal waiting (at least one, waited for); None: the stream ends."""
        first = await self.queue.get()
        if first is None:
            return None
        out = [first]
        while not self.queue.empty():
            sig = self.queue.get_nowait()
            if sig is None:
                self.queue.put_nowait(None)  # ends the stream after these
                break
            out.append(sig)
        return out


class Hub:
    def __init__(self, depth: int = 4096) -> None:
        self.depth = depth
        self.subscriptions: set[Subscription] = set()
        self.wants_hops = False  # some subscription asked for the pipeline's hops

    def subscribe(self, stock_ids: frozenset[int] | None, hops: bool = False) -> Subscription:
        sub = Subscription(stock_ids, self.depth, hops)
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
