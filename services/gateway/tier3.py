"""Tier 3: the feature service's background volatility estimate, refreshed in the
background and kept in memory, so it still answers (with its age) while Redis is down."""

from __future__ import annotations

import asyncio
import logging
import math

from rtvol.featurestore import FeatureStore, VolEstimate
from rtvol.services.gateway import metrics
from rtvol.tasks import BackgroundTask, next_round

log = logging.getLogger(__name__)
MODEL = "vol_estimate"


class VolCache:
    def __init__(self, store: FeatureStore | None, refresh_s: float, timeout_s: float) -> None:
        self.store, self.refresh_s, self.timeout_s = store, refresh_s, timeout_s
        self.estimate: VolEstimate | None = None
        self._index: dict[int, int] = {}
        self._task = BackgroundTask()

    def lookup(self, stock_id: int) -> tuple[float, int] | None:
        """(estimated RV, computed at µs), or None when the stock has no estimate."""
        i = self._index.get(stock_id)
        if i is None or self.estimate is None:
            return None
        vol = float(self.estimate.vol[i])
        return (vol, self.estimate.computed_us) if math.isfinite(vol) else None  # never served

    async def refresh(self) -> None:
        if self.store is None:
            return
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation that
        # lands as the read completes, and this loop would then outlive its stop()
        async with asyncio.timeout(self.timeout_s):
            est = await self.store.read_vol()
        if est is not None and (self.estimate is None or est.computed_us >= self.estimate.computed_us):
            self.estimate = est
            self._index = {int(s): i for i, s in enumerate(est.stock_ids)}

    async def _loop(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as e:  # Redis down: keep the last estimate, it carries its age
                metrics.UPSTREAM_ERRORS.labels("store_vol", type(e).__name__).inc()
            await next_round(self.refresh_s)

    def start(self) -> None:
        self._task.start(self._loop())

    async def stop(self) -> None:
        await self._task.stop()
