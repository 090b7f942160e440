"""The signal cache: an in-process LRU in front of a Redis hash (shared by replicas)."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from rtvol.services.gateway import metrics
from rtvol.services.gateway.signal import Signal

log = logging.getLogger(__name__)


def hash_key(spec_hash: str) -> bytes:
    return f"rtvol:signals:{spec_hash}".encode()


class SignalCache:
    def __init__(self, size: int, redis: Any | None = None, spec_hash: str = "") -> None:
        self.size, self.redis, self.key = size, redis, hash_key(spec_hash)
        self._lru: OrderedDict[int, Signal] = OrderedDict()
        # copies another worker's newest signal of a stock into the LRU (shards.py); None: not a worker
        self.pull: Callable[[int], None] | None = None

    def get(self, stock_id: int) -> Signal | None:
        sig = self._lru.get(stock_id)
        if sig is not None:
            self._lru.move_to_end(stock_id)
        return sig

    def fresh(self, stock_id: int, max_age_ms: float, now_us: int) -> Signal | None:
        sig = self.get(stock_id)
        hit = sig is not None and (now_us - sig.computed_us) <= max_age_ms * 1000
        metrics.CACHE.labels("hit" if hit else "miss").inc()
        return sig if hit else None

    def put_local(self, signals: list[Signal]) -> None:
        for sig in signals:
            self._lru[sig.stock_id] = sig
            self._lru.move_to_end(sig.stock_id)
        while len(self._lru) > self.size:
            self._lru.popitem(last=False)

    async def put(self, signals: list[Signal]) -> None:
        self.put_local(signals)
        if self.redis is not None and signals:
            try:
                await self.redis.hset(self.key, mapping={str(s.stock_id): s.dumps() for s in signals})
            except Exception as e:  # the local copy still serves; Redis catches up on the next write
                metrics.UPSTREAM_ERRORS.labels("signal_cache", type(e).__name__).inc()

    async def get_remote(self, stock_id: int) -> Signal | None:
        """The LRU (another worker's newest signal pulled into it first), else the shared hash
        (a signal another replica computed)."""
        if self.pull is not None:
            self.pull(stock_id)
        sig = self.get(stock_id)
        if sig is not None or self.redis is None:
            return sig
        try:
            raw = await self.redis.hget(self.key, str(stock_id))
        except Exception as e:
            metrics.UPSTREAM_ERRORS.labels("signal_cache", type(e).__name__).inc()
            return None
        return None if raw is None else Signal.loads(raw)
