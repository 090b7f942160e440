"""Background volatility estimate: refreshed on a cadence off the ingest path, cached with its age.

The gateway's last fallback tier reads it from the feature store (one key for all stocks; with
several replicas each writes its own stocks' field there and a read merges them).
"""

from __future__ import annotations

import logging

import numpy as np

from rtvol.features.online import OnlineState
from rtvol.featurestore import FeatureStore, VolEstimate, now_us
from rtvol.services.feature import metrics
from rtvol.services.feature.estimates import ewma_vol
from rtvol.tasks import BackgroundTask, next_round

log = logging.getLogger(__name__)


class VolEstimator:
    def __init__(self, state: OnlineState, store: FeatureStore, interval_s: float,
                 halflife_steps: float, shard: str = "0/1") -> None:
        self.state, self.store, self.shard = state, store, shard  # ORDINAL/REPLICAS
        self.interval_s, self.halflife_steps = interval_s, halflife_steps
        self.latest: VolEstimate | None = None
        self._task = BackgroundTask()

    def compute(self) -> VolEstimate:
        idx = np.flatnonzero(self.state.closed > 0)
        return VolEstimate(idx.astype(np.int32), ewma_vol(self.state.windows(idx), self.halflife_steps),
                           now_us())

    async def refresh(self) -> VolEstimate:
        est = self.compute()
        self.latest = est
        await self.store.write_vol(est, self.shard)
        return est

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:  # a store outage must not stop the estimates in memory
                log.exception("volatility estimate refresh failed")
            if self.latest is not None:
                metrics.VOL_AGE.set(self.latest.age_ms() / 1000.0)
            await next_round(self.interval_s)

    def start(self) -> None:
        self._task.start(self._run())

    async def stop(self) -> None:
        await self._task.stop()
