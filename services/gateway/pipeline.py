"""The gateway's half of the tick-to-signal pipeline: infer the stocks whose windows changed,
in batches through the breaker and tiers (tier 1 sidecar, tier 2 ONNX Runtime when it is
down or slow), keep each signal in memory and push it to Subscribe clients.

No timer on the signal path: the loop wakes when the Watch stream holds a newer window and
takes the dirty stocks into a batch while fewer than ``inflight`` batches are out; windows
that arrive while that many are out leave together when one settles, so batches grow with
load. Several batches out at once let a window that arrives during a call leave at once
instead of waiting for the whole call (the sidecar batches concurrent calls itself). A stock
is in at most one unsettled batch (``WindowMemory.busy``): a newer window of a stock in
flight waits for the batch after its call settles, so per stock the signals settle, are
shared, pushed and written in window-version order, and no version is inferred twice.
Only when nothing arrives for ``redo_s`` does it look back: signals a fallback tier computed
(the sidecar was down) are inferred anew once the sidecar's breaker lets a call through
again, so tier 1 resumes without waiting for each stock's next window.

With gateway workers it infers only this worker's shard and ``share`` hands each batch's
signals to the others (services/gateway/shards.py) before they go to Redis.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import numpy as np

from rtvol.featurestore import now_us
from rtvol.pipeline_hops import HOPS
from rtvol.services.gateway import metrics
from rtvol.services.gateway.cache import SignalCache
from rtvol.services.gateway.hub import Hub
from rtvol.services.gateway.memory import WindowMemory
from rtvol.services.gateway.predictor import Predictor
from rtvol.services.gateway.signal import Signal
from rtvol.tasks import BackgroundTask
from rtvol.telemetry import observe_many

log = logging.getLogger(__name__)
FEATURE_STAGE, GATEWAY_STAGE = (metrics.PIPELINE_STAGE.labels(s) for s in ("feature", "gateway"))
HOP_SECONDS = [metrics.PIPELINE_HOP.labels(h) for h in HOPS]
PIPELINE_SIGNALS = {tier: metrics.PIPELINE_SIGNALS.labels(str(tier)) for tier in (1, 2)}
WRITE_WITHIN_S = 0.1  # the longest a signal waits for the shared hash while batches keep coming


class Pipeline:
    def __init__(self, memory: WindowMemory, predictor: Predictor, cache: SignalCache, hub: Hub,
                 max_batch: int, deadline_s: float, redo_s: float = 1.0,
                 share: Callable[[list[Signal]], None] | None = None, inflight: int = 1) -> None:
        self.memory, self.predictor, self.cache, self.hub, self.share = memory, predictor, cache, hub, share
        self.max_batch, self.deadline_s, self.redo_s = max_batch, deadline_s, redo_s
        self.inflight = max(1, inflight)  # batches out at once
        self._task, self._writer = BackgroundTask(), BackgroundTask()
        self._batches: set[asyncio.Task[None]] = set()  # out now (held until done: a stop cancels them)
        self._out = 0  # of them, not settled yet (a done callback would come a loop turn late)
        self._unwritten: dict[int, Signal] = {}  # per stock, the newest signal the shared hash lacks
        self._write = asyncio.Event()
        self._unwritten_since = 0.0  # monotonic: when the oldest signal not asked to be written came

    async def step(self, idx: np.ndarray) -> None:
        """Infer and publish the batch ``idx`` (taken from memory); its stocks are free to be
        taken again once it has ended, whatever the outcome."""
        try:
            await self._step(idx)
        finally:
            self.memory.release(idx)

    async def _step(self, idx: np.ndarray) -> None:
        mem = self.memory
        formed = now_us()
        held_us, received_us, feature_hops = mem.held_us[idx], mem.received_us[idx], mem.feature_hops_us[idx]
        call_us: list[int] = []
        signals = await self.predictor.infer_held(idx, time.perf_counter() + self.deadline_s, call_us)
        settled = now_us()
        if self.share is not None:
            self.share(signals)
        pushed = now_us()
        hops = np.zeros((len(idx), len(HOPS) - 1), np.int64)  # all but the Subscribe stream's own
        hops[:, 0], hops[:, 1:4], hops[:, 4] = received_us, feature_hops, held_us
        hops[:, 5:] = [formed, *call_us, settled, pushed]
        _observe_hops(hops[np.argmin(np.where(received_us > 0, received_us, np.iinfo(np.int64).max))])
        if self.hub.wants_hops:
            for sig, row in zip(signals, hops.tolist(), strict=True):
                sig.hops_us = tuple(row)
        self.hub.publish(signals)
        observe_many(GATEWAY_STAGE, (pushed - held_us) / 1e6)
        known = received_us > 0
        observe_many(FEATURE_STAGE, np.maximum(0, held_us[known] - received_us[known]) / 1e6)
        metrics.PIPELINE_BATCH.observe(len(idx))
        tiers = [s.tier for s in signals]
        for tier, counter in PIPELINE_SIGNALS.items():
            if n := tiers.count(tier):
                counter.inc(n)
        self.cache.put_local(signals)
        for sig in signals:  # a stock is in one batch at a time: this holds only if that changed
            unwritten = self._unwritten.get(sig.stock_id)
            if unwritten is None or sig.window_version >= unwritten.window_version:
                self._unwritten[sig.stock_id] = sig
        # the shared hash (what another replica and a restarted worker read) once the burst is
        # over (no other batch out, no window waiting), or where a feed never pauses, once its
        # oldest signal has waited WRITE_WITHIN_S
        if not self._unwritten_since:
            self._unwritten_since = time.monotonic()
        if ((self._out <= 1 and not mem.dirty.any())
                or time.monotonic() - self._unwritten_since >= WRITE_WITHIN_S):
            self._unwritten_since = 0.0
            self._write.set()

    async def _write_forever(self) -> None:
        """One writer, so a stock's newer signal is never overtaken by an older one in the hash;
        signals of the batches of a burst go in one write after it (the write's packing, ~2.7
        µs a signal, no longer shares the loop with the burst's batches)."""
        while True:
            await self._write.wait()
            self._write.clear()
            signals = list(self._unwritten.values())
            await self.cache.put(signals)  # never raises: a failed write is counted
            for sig in signals:  # kept until written (a stop meanwhile writes them); a newer stays
                if self._unwritten.get(sig.stock_id) is sig:
                    del self._unwritten[sig.stock_id]

    def _redo_fallbacks(self) -> None:
        """Fallback-tier signals become dirty again when the sidecar may be called (closed, or
        its open interval over: the batch is then the breaker's half-open probe)."""
        sidecar = self.predictor.tiers.sidecar
        if sidecar is not None and not sidecar.breaker.refusing():
            self.memory.redo(self.max_batch)

    async def _run(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self.redo_s):  # not wait_for: it can swallow a stop
                    await self.memory.wake.wait()
            except TimeoutError:
                self._redo_fallbacks()
            self.memory.wake.clear()
            while self._out < self.inflight and len(idx := self.memory.take(self.max_batch)):
                self._out += 1
                task = asyncio.create_task(self._settle(idx))
                self._batches.add(task)
                task.add_done_callback(self._batches.discard)

    async def _settle(self, idx: np.ndarray) -> None:
        try:
            await self.step(idx)
        except Exception:  # keep pushing; a Predict for these stocks computes them itself
            log.exception("pipeline batch of %d stocks failed", len(idx))
        finally:
            self._out -= 1
            self.memory.wake.set()  # a batch may leave now: windows waited for this one to settle

    def start(self) -> None:
        self._task.start(self._run())
        self._writer.start(self._write_forever())

    async def stop(self) -> None:
        await self._task.stop()
        batches = list(self._batches)
        for task in batches:
            task.cancel()
        if batches:
            await asyncio.wait(batches, timeout=1.0)
        await self._writer.stop()
        if self._unwritten:  # what a restarted worker or another replica reads next
            await self.cache.put(list(self._unwritten.values()))


def _observe_hops(row: np.ndarray) -> None:
    """Each known hop of one signal from the known hop before it (a redo has no receipt: none)."""
    if not row[0]:
        return
    before = int(row[0])
    for hop, at in zip(HOP_SECONDS[1:], row[1:].tolist(), strict=False):
        if at:
            hop.observe(max(0, at - before) / 1e6)
            before = at
