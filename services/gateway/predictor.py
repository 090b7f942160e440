"""Predict: features from the store, then the fastest tier that answers inside the deadline.

Tier 1 (sidecar, fanned in) while its breaker allows; tier 2 (ONNX Runtime in process)
when tier 1 fails, times out or is open; tier 3 (background volatility estimate) for stocks
without a window or when the feature store is unreachable, where a cached signal (flagged
stale) is preferred when there is one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, replace

import numpy as np
from opentelemetry import trace

from rtvol.errors import Unavailable
from rtvol.featurestore import FeatureStore, Windows, now_us
from rtvol.services.gateway import metrics, tier3
from rtvol.services.gateway.breaker import Breaker
from rtvol.services.gateway.cache import SignalCache
from rtvol.services.gateway.fanin import Coalescer
from rtvol.services.gateway.kelly import KellyTable
from rtvol.services.gateway.memory import WindowMemory
from rtvol.services.gateway.shadow import Shadow
from rtvol.services.gateway.signal import Signal, finite_rows, from_outputs
from rtvol.services.gateway.tier1 import Tier1
from rtvol.services.gateway.tier2 import LocalModel
from rtvol.services.gateway.tier3 import VolCache
from rtvol.telemetry import traced

TIER2_RESERVE_S = 0.002  # what tier 2 needs at most for a batch; tier 1 gets the rest
_NO_SPAN = contextlib.nullcontext()


@dataclass(frozen=True)
class FeatureSource:
    """Where the windows come from: the feature store (None: none configured, tier 3 only)
    behind its breaker and a timeout per read."""

    store: FeatureStore | None
    breaker: Breaker
    timeout_s: float


@dataclass(frozen=True)
class Tiers:
    """Who answers, fastest first: the sidecar through the fan-in (None: no tier 1), the same
    model on ONNX Runtime in this process, the background volatility estimate."""

    sidecar: Tier1 | None
    fanin: Coalescer | None
    local: LocalModel
    vol: VolCache


class Predictor:
    def __init__(self, *, features: FeatureSource, tiers: Tiers, cache: SignalCache, kelly: KellyTable,
                 stocks: int, deadline_s: float, tracer: trace.Tracer) -> None:
        self.features, self.tiers, self.cache, self.kelly = features, tiers, cache, kelly
        self.stocks, self.deadline_s, self.tracer = stocks, deadline_s, tracer
        self.traced = traced(tracer)
        self.memory: WindowMemory | None = None  # windows pushed by the feature service, if watched
        self.shadow: Shadow | None = None  # the shadow version, sent every tier-1 batch of held windows

    async def predict(self, stock_ids: list[int], max_staleness_ms: float = 0.0, kelly: bool = False,
                      route: str = "rest") -> list[Signal]:
        start = time.perf_counter()
        span = (self.tracer.start_as_current_span("predict", attributes={"rtvol.stocks": len(stock_ids)})
                if self.traced else _NO_SPAN)  # a no-op span still costs µs a request
        with span:
            out = await self._predict(stock_ids, max_staleness_ms, start + self.deadline_s)
        if kelly:
            out = [self._size(s) for s in out]
        tier = max((s.tier for s in out), default=0)
        metrics.REQUEST.labels(route, str(tier)).observe(time.perf_counter() - start)
        return out

    async def _predict(self, stock_ids: list[int], max_staleness_ms: float, deadline: float) -> list[Signal]:
        now = now_us()
        out: dict[int, Signal] = {}
        todo: list[int] = []
        held: list[int] = []
        for sid in dict.fromkeys(stock_ids):  # a repeated id is answered once
            if not 0 <= sid < self.stocks:
                out[sid] = _error(sid, f"unknown stock id {sid} (known: 0..{self.stocks - 1})", "unknown")
            elif self.memory is not None and self.memory.holds(sid):
                held.append(sid)
            elif max_staleness_ms and (hit := self.cache.fresh(sid, max_staleness_ms, now)) is not None:
                out[sid] = hit
            else:
                todo.append(sid)
        if todo:
            fresh = await self.compute(todo, deadline)
            # what this gateway answers if the store goes away (flagged stale then)
            self.cache.put_local([s for s in fresh if not s.error and not s.stale])
            for sig in fresh:
                out[sig.stock_id] = sig
        if held:
            for sig in await self._from_memory(held, deadline):
                out[sig.stock_id] = sig
        return [out[s] for s in stock_ids]

    async def _from_memory(self, ids: list[int], deadline: float) -> list[Signal]:
        """Signals computed from the latest windows held (read-your-writes): a memory read when
        the signal is current, else the pipeline's in-flight batch, waited for within the
        deadline, else computed here from the held window (from the store where another
        worker holds it)."""
        assert self.memory is not None
        mem = self.memory
        answers = {sid: sig for sid in ids if (sig := mem.current(sid)) is not None}
        metrics.MEMORY.labels("current").inc(len(answers))
        stored: list[Signal] = []
        if len(answers) < len(ids):
            # only the missing ones: a stock answered above may get a newer window meanwhile
            missing = [sid for sid in ids if sid not in answers]
            await mem.wait_current(missing, deadline - time.perf_counter() - TIER2_RESERVE_S)
            waited = {sid: sig for sid in missing if (sig := mem.current(sid)) is not None}
            late = [sid for sid in missing if sid not in waited]
            held = np.asarray([sid for sid in late if mem.mine[sid]], np.int64)
            computed = {s.stock_id: s for s in await self.infer_held(held, deadline)}
            if len(held) < len(late):  # compute() counts its own answers
                stored = await self.compute([sid for sid in late if not mem.mine[sid]], deadline)
            metrics.MEMORY.labels("waited").inc(len(waited))
            metrics.MEMORY.labels("computed").inc(len(held))
            metrics.MEMORY.labels("stored").inc(len(stored))
            answers |= waited | computed
        for sig in answers.values():
            metrics.ANSWERS.labels(str(sig.tier)).inc()
        answers |= {sig.stock_id: sig for sig in stored}
        return [answers[sid] for sid in ids]

    async def infer_held(self, idx: np.ndarray, deadline: float, call_us: list[int] | None = None
                         ) -> list[Signal]:
        """Signals of the windows held for ``idx`` (each stamped, as every computed signal is,
        with its window's version and receipt time), kept in memory: what the pipeline pushes;
        the model call's start and end (wall µs) are appended to ``call_us`` if given."""
        assert self.memory is not None
        if not len(idx):
            return []
        mem = self.memory
        # read before the await: newer windows may arrive meanwhile
        end, held = mem.end_step[idx], mem.read(idx)
        signals = await self._infer(idx.tolist(), held, np.arange(len(idx)), deadline, call_us)
        for sig, e in zip(signals, end.tolist(), strict=True):
            sig.window_end_step = e
        mem.settle(signals)
        if mem.scorer is not None:
            mem.scorer.record(signals)
        if self.shadow is not None and any(sig.tier == 1 for sig in signals):  # off the signal path
            self.shadow.offer(idx.tolist(), held.windows, held.written_us.tolist(), end.tolist())
        return signals

    async def compute(self, stock_ids: list[int], deadline: float) -> list[Signal]:
        """Fresh signals for known stocks (also what pre-computation calls)."""
        windows = await self._read(stock_ids)
        if windows is None:  # store unreachable: what we have, flagged stale
            return [self._held(sid) for sid in stock_ids]
        found = np.flatnonzero(windows.found)
        signals = {sid: self._tier3(sid, stale=False) for i, sid in enumerate(stock_ids)
                   if not windows.found[i]}
        if len(found):
            for sig in await self._infer([stock_ids[i] for i in found], windows, found, deadline):
                signals[sig.stock_id] = sig
        result = [signals[s] for s in stock_ids]
        for sig in result:
            metrics.ANSWERS.labels(str(sig.tier) if not sig.error else "error").inc()
            if not sig.error:
                metrics.FEATURE_AGE.observe(max(0, now_us() - sig.feature_written_us) / 1e6)
        return result

    async def compute_present(self, stock_ids: list[int], deadline: float) -> list[Signal]:
        """Model signals for those of ``stock_ids`` that have features; nothing for the rest
        (no tier-3 answers, no item errors): what the cold-start pre-computation caches.
        Raises Unavailable when the feature store cannot be read."""
        windows = await self._read(stock_ids)
        if windows is None:
            raise Unavailable("feature store: read failed (or its breaker is open)")
        found = np.flatnonzero(windows.found)
        if not len(found):
            return []
        return await self._infer([stock_ids[i] for i in found], windows, found, deadline)

    async def _read(self, stock_ids: list[int]) -> Windows | None:
        source = self.features
        if source.store is None or not source.breaker.allow():
            return None
        with self.tracer.start_as_current_span("feature_read"):
            try:
                # asyncio.timeout, not wait_for: no task (and loop turn) per call
                async with asyncio.timeout(source.timeout_s):
                    windows = await source.store.read(np.asarray(stock_ids, np.int32))
            except Exception as e:
                metrics.UPSTREAM_ERRORS.labels("store", type(e).__name__).inc()
                source.breaker.record(False)
                return None
        source.breaker.record(True)
        return windows

    async def _infer(self, ids: list[int], windows: Windows, rows: np.ndarray, deadline: float,
                     call_us: list[int] | None = None) -> list[Signal]:
        x = windows.windows[rows] if len(rows) != len(windows.found) else windows.windows
        if call_us is not None:
            call_us.append(now_us())
        sidecar, fanin, local = self.tiers.sidecar, self.tiers.fanin, self.tiers.local
        outputs, tier, version = None, 2, local.version
        remaining = deadline - time.perf_counter() - TIER2_RESERVE_S
        if sidecar is not None and fanin is not None and remaining > 0 and sidecar.breaker.allow():
            with self.tracer.start_as_current_span("ModelStreamInfer"):
                try:
                    async with asyncio.timeout(remaining):
                        outputs = await fanin.submit(x)
                    tier, version = 1, sidecar.version or version
                except Exception:
                    outputs = None  # tier 2 answers; the breaker has counted it
        if outputs is not None and not finite_rows(outputs).all():  # never served: tier 2 answers
            metrics.NON_FINITE.labels("1").inc()
            outputs, tier, version = None, 2, local.version
        written = windows.written_us[rows].tolist()
        if outputs is None:
            outputs = local.infer(x)
        if call_us is not None:
            call_us.append(now_us())
        metrics.MODEL_SIGNALS.labels(local.name, version, str(tier), "serving").inc(len(ids))
        made = from_outputs(outputs, ids, local.name, version, tier, written, now_us())
        out = [sig if sig is not None else self._not_finite(sid) for sid, sig in zip(ids, made, strict=True)]
        # what each was computed from, held or read from the store (tier 3's estimate: not known)
        stamps = zip(windows.version[rows].tolist(), windows.received_us[rows].tolist(), strict=True)
        for sig, (v, r) in zip(out, stamps, strict=True):
            if sig.tier in (1, 2):
                sig.window_version, sig.received_us = v, r
        return out

    def _not_finite(self, sid: int) -> Signal:
        """Tier 2 answered NaN/inf for this stock: the volatility estimate answers instead."""
        metrics.NON_FINITE.labels("2").inc()
        if self.tiers.vol.lookup(sid) is None:
            return _error(sid, f"stock {sid}: the model's output was not finite and there is no "
                          "volatility estimate", "non_finite")
        return self._tier3(sid, stale=False)

    def _tier3(self, sid: int, stale: bool) -> Signal:
        est = self.tiers.vol.lookup(sid)
        if est is None:
            return _error(sid, f"no features yet for stock {sid}", "no_features")
        return Signal(sid, est[0], None, None, tier3.MODEL, "", 3, est[1], now_us(), stale=stale)

    def _held(self, sid: int) -> Signal:
        cached = self.cache.get(sid)
        if cached is None:
            return self._tier3(sid, stale=True)
        return replace(cached, stale=True)

    def _size(self, sig: Signal) -> Signal:
        # a copy: the cached signal is shared with requests that did not ask for sizing
        if sig.direction is None:
            return sig
        return replace(sig, kelly_fraction=self.kelly.fraction(*sig.direction, sig.rv))


def _error(sid: int, message: str, reason: str) -> Signal:
    metrics.ITEM_ERRORS.labels(reason).inc()
    return Signal(sid, error=message)
