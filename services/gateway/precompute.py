"""Pre-computed signals: follow the feature store's change stream, infer every changed
stock in one batch, write the signals to the cache and push them to subscribers.

Cold start: before following the stream, every known stock that already has features gets
its signal, so a Predict with max_staleness_ms is a cache hit from the start rather than
only after that stock's next change."""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np

from rtvol.errors import Unavailable
from rtvol.featurestore import FeatureStore
from rtvol.services.gateway import metrics
from rtvol.services.gateway.cache import SignalCache
from rtvol.services.gateway.hub import Hub
from rtvol.services.gateway.predictor import Predictor
from rtvol.services.gateway.signal import Signal
from rtvol.tasks import BackgroundTask

log = logging.getLogger(__name__)


class Precomputer:
    def __init__(self, store: FeatureStore, predictor: Predictor, cache: SignalCache, hub: Hub,
                 poll_s: float, deadline_s: float, batch_entries: int = 1000) -> None:
        self.store, self.predictor, self.cache, self.hub = store, predictor, cache, hub
        self.poll_s, self.deadline_s, self.batch_entries = poll_s, deadline_s, batch_entries
        self.after = b"0"
        self._task = BackgroundTask()

    async def warm(self, attempts: int = 6) -> int:
        """Signals for every known stock that has features, a batch at a time; returns how many.
        A batch whose read fails (the first connection can miss the store timeout on a busy
        machine) is tried again, waiting 0.1, 0.2, 0.4 ... s; after ``attempts`` it is left to
        the change stream."""
        total = 0
        for lo in range(0, self.predictor.stocks, self.batch_entries):
            ids = list(range(lo, min(lo + self.batch_entries, self.predictor.stocks)))
            for attempt in range(attempts):
                try:
                    signals = await self.predictor.compute_present(ids, time.perf_counter() + self.deadline_s)
                except Unavailable:
                    await asyncio.sleep(0.1 * 2 ** attempt)
                    continue
                total += await self._keep(signals)
                break
        log.info("cold start: pre-computed %d signals", total)
        return total

    async def step(self) -> int:
        """One poll: returns the number of signals computed."""
        entries = await self.store.changes(self.after, self.batch_entries)
        if not entries:
            return 0
        self.after = entries[-1][0]
        changed = np.unique(np.concatenate([ids for _, ids in entries]))
        known = [int(s) for s in changed if 0 <= s < self.predictor.stocks]
        if not known:
            return 0
        return await self._keep(await self.predictor.compute(known, time.perf_counter() + self.deadline_s))

    async def _keep(self, signals: list[Signal]) -> int:
        """Cache and push the fresh ones; returns how many."""
        fresh = [s for s in signals if not s.error and not s.stale]
        await self.cache.put(fresh)
        self.hub.publish(fresh)
        metrics.PRECOMPUTED.inc(len(fresh))
        return len(fresh)

    async def _loop(self, follow: bool, warm: bool) -> None:
        if warm:
            await self.warm()
        while follow:
            try:
                if await self.step():
                    continue  # there may be more right away
            except Exception as e:  # Redis down: try again; the stream keeps what we missed
                metrics.UPSTREAM_ERRORS.labels("store_changes", type(e).__name__).inc()
                await asyncio.sleep(0.1)
            await asyncio.sleep(self.poll_s)

    def start(self, follow: bool = True, warm: bool = True) -> None:
        """Warm (unless the caller has), then follow the change stream unless the pipeline
        (Watch) replaces it."""
        self._task.start(self._loop(follow, warm))

    async def stop(self) -> None:
        await self._task.stop()
