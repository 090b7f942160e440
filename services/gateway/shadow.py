"""The shadow version: every tier-1 batch of held windows (the tick-to-signal pipeline's,
and a Predict's computed from a held window) is also sent to it, off the signal path.

`offer` queues the batch and returns at once (a bounded queue: when full the batch is dropped
and counted); one background task sends the queued batches, coalesced (or split) to at most
``max_batch`` rows a call, to the sidecar's shadow version on a channel of its own, counts
the signals by model, version, tier and role=shadow, and hands them to the live scorer
(scorer.py) with that role.
Shadow signals are never served, never cached, and a failed or slow shadow call is counted
here only: the breaker never hears of it.

The shadow yields to served work, so it never changes which tier serves: a shadow call
leaves only while no served tier-1 call is out, and while the sidecar's breaker is closed and
the last served call used at most ``SLOW_LOAD`` of its latency budget; otherwise the queued
batches are dropped and counted by reason (a sample of the load is scored, not all of it).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from rtvol.featurestore import now_us
from rtvol.services.gateway import metrics
from rtvol.services.gateway.breaker import State
from rtvol.services.gateway.scorer import LiveScorer
from rtvol.services.gateway.signal import from_outputs
from rtvol.tasks import BackgroundTask

if TYPE_CHECKING:  # not at run time: sidecar_client loads the inference protos, which tests keep apart
    from rtvol.services.gateway.sidecar_client import SidecarClient
    from rtvol.services.gateway.tier1 import Tier1

log = logging.getLogger(__name__)
ROLE = "shadow"
# a served call that took more than this share of its latency budget pauses the shadow: on a
# shared CPU the shadow's work would push the next served calls over it (and open the breaker)
SLOW_LOAD = 0.5


@dataclass(slots=True)
class _Batch:
    version: str
    ids: list[int]
    windows: np.ndarray  # owned: the caller never writes to it again
    written_us: list[int]
    end_steps: list[int]  # global step each window ends before (live scoring)

    def rows(self, part: slice) -> _Batch:
        return _Batch(self.version, self.ids[part], self.windows[part], self.written_us[part],
                      self.end_steps[part])


class Shadow:
    def __init__(self, client: SidecarClient, max_batch: int, timeout_s: float, max_queued: int = 16,
                 scorer: LiveScorer | None = None, served: Tier1 | None = None) -> None:
        """``served``: the tier-1 calls the shadow yields to (None: it never waits)."""
        self.client, self.max_batch, self.timeout_s = client, max_batch, timeout_s
        self.max_queued, self.scorer, self.served = max_queued, scorer, served
        self.version = ""  # "": no shadow (the version follower sets it)
        self._pending: collections.deque[_Batch] = collections.deque()
        self._wake = asyncio.Event()
        self._task = BackgroundTask()

    def offer(self, ids: list[int], windows: np.ndarray, written_us: list[int], end_steps: list[int]) -> None:
        """Queue a batch tier 1 answered for the shadow version; never waits."""
        if not self.version:
            return
        if len(self._pending) >= self.max_queued:
            metrics.SHADOW_DROPPED.labels(self.client.model, self.version, "queue_full").inc()
            return
        self._pending.append(_Batch(self.version, ids, windows, written_us, end_steps))
        self._wake.set()

    def _take(self) -> _Batch:
        """Up to max_batch rows from the front of the queue, of one version: queued batches
        coalesce, a larger one is split (its rest stays in front)."""
        first = self._pending.popleft()
        if len(first.ids) > self.max_batch:
            self._pending.appendleft(first.rows(slice(self.max_batch, None)))
            return first.rows(slice(0, self.max_batch))
        parts = [first]
        rows = len(first.ids)
        while (self._pending and self._pending[0].version == first.version
               and rows + len(self._pending[0].ids) <= self.max_batch):
            parts.append(self._pending.popleft())
            rows += len(parts[-1].ids)
        if len(parts) == 1:
            return first
        return _Batch(first.version, [i for p in parts for i in p.ids],
                      np.concatenate([p.windows for p in parts]), [w for p in parts for w in p.written_us],
                      [e for p in parts for e in p.end_steps])

    async def _send(self, batch: _Batch) -> None:
        model = self.client.model
        try:
            async with asyncio.timeout(self.timeout_s):
                outputs, version, _ = await self.client.infer(batch.windows, batch.version)
        except Exception as e:  # counted, never raised: the served signals do not depend on it
            metrics.SHADOW_ERRORS.labels(model, batch.version, type(e).__name__).inc()
            log.debug("shadow call to %s version %s failed: %r", model, batch.version, e)
            return
        made = from_outputs(outputs, batch.ids, model, version, 1, batch.written_us, now_us())
        signals = []
        for sig, end in zip(made, batch.end_steps, strict=True):
            if sig is not None:
                sig.window_end_step = end
                signals.append(sig)
        if bad := len(made) - len(signals):
            metrics.SHADOW_ERRORS.labels(model, version, "non_finite").inc(bad)
        metrics.MODEL_SIGNALS.labels(model, version, "1", ROLE).inc(len(signals))
        if self.scorer is not None:
            self.scorer.record(signals, ROLE)

    def _yield_reason(self) -> str:
        """Why served work comes first now ("": it does not need the sidecar's CPU)."""
        served = self.served
        if served is None:
            return ""
        if served.breaker.state is not State.CLOSED:
            return "breaker"
        return "served_slow" if served.last_load > SLOW_LOAD else ""

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                if self.served is not None:
                    await self.served.idle.wait()  # never beside a served call
                if reason := self._yield_reason():
                    for batch in self._pending:
                        metrics.SHADOW_DROPPED.labels(self.client.model, batch.version, reason).inc()
                    self._pending.clear()
                    break
                await self._send(self._take())

    def start(self) -> None:
        self._task.start(self._run())

    async def stop(self) -> None:
        await self._task.stop()
