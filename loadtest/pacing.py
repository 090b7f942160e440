"""A token bucket that paces a sender to a rate with a bounded burst (asyncio)."""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    """``take(n)`` waits until n tokens are there; tokens refill at ``rate``/s up to ``burst``.

    The burst cap is what keeps a sender that fell behind from catching up in one flood:
    time lost stays lost, and shows up as lag instead of as a spike on the receiver.
    """

    def __init__(self, rate: float, burst: float) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be > 0")
        self.rate, self.burst = rate, burst
        self.tokens = burst
        self.stamp = time.perf_counter()

    def _refill(self) -> None:
        now = time.perf_counter()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    async def take(self, n: float) -> None:
        """A message larger than the burst waits for a full bucket and leaves it in debt."""
        need = min(n, self.burst)
        self._refill()
        while self.tokens < need:
            await asyncio.sleep((need - self.tokens) / self.rate)
            self._refill()
        self.tokens -= n
