"""Fan-out of ingested batches to side consumers (tick log, alerts, VWAP), off the ingest path.

Each consumer owns a bounded queue and a worker thread. ``offer`` never blocks and never
raises: when a queue is full the overflow policy drops one batch and counts it
(``rtvol_feature_fanout_drops_total{consumer}``); depth is a gauge. Policies:
* ``drop_oldest`` for consumers that care about the *latest* market state (alerts, VWAP):
  an alert about a book from seconds ago is worth less than one about the book now;
* ``drop_newest`` for the tick log: what is queued is written in arrival order and the
  gap (counted) sits at the tail of a burst instead of being punched into its middle.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from rtvol.features.online_batch import UpdateBatch
from rtvol.services.feature import metrics

log = logging.getLogger(__name__)
Policy = Literal["drop_oldest", "drop_newest"]


@dataclass(frozen=True)
class Ingested:
    """One ingest message after apply: its updates and each one's reject reason (0 = accepted).

    The arrays are never mutated after decode, so consumers share them without copying.
    """

    batch: UpdateBatch
    reason: np.ndarray
    wall_s: float  # time.monotonic() at ingest


class Consumer:
    """A bounded queue drained by one daemon thread calling ``handle`` (and ``tick`` when idle)."""

    def __init__(self, name: str, handle: Callable[[Ingested], None], maxsize: int, policy: Policy,
                 tick: Callable[[], None] | None = None, tick_s: float = 0.5) -> None:
        self.name, self.handle, self.maxsize, self.policy = name, handle, maxsize, policy
        self.tick, self.tick_s = tick, tick_s
        self.items: deque[Ingested] = deque()
        self.drops = 0
        self._cv = threading.Condition()
        self._stopping = False
        self._busy = False
        self._thread = threading.Thread(target=self._run, name=f"fanout-{name}", daemon=True)
        self._depth = metrics.FANOUT_DEPTH.labels(name)
        self._dropped = metrics.FANOUT_DROPS.labels(name)

    def offer(self, item: Ingested) -> None:
        with self._cv:
            if len(self.items) >= self.maxsize:
                self.drops += 1
                self._dropped.inc()
                if self.policy == "drop_newest":
                    return
                self.items.popleft()
            self.items.append(item)
            self._depth.set(len(self.items))
            self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                if not self.items and not self._stopping:
                    self._cv.wait(self.tick_s)
                if not self.items and self._stopping:
                    return
                item = self.items.popleft() if self.items else None
                self._busy = item is not None
                self._depth.set(len(self.items))
            try:
                if item is not None:
                    self.handle(item)
                elif self.tick is not None:
                    self.tick()
            except Exception:  # a consumer bug must not kill its thread or touch ingest
                log.exception("fan-out consumer %s failed", self.name)
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()

    def start(self) -> None:
        self._thread.start()

    def drain(self, timeout_s: float) -> bool:
        """Wait until the queue is empty and the worker idle (tests, shutdown)."""
        with self._cv:
            return self._cv.wait_for(lambda: not self.items and not self._busy, timeout_s)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Finish what is queued (bounded by ``timeout_s``), then end the thread."""
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        self._thread.join(timeout_s)


class FanOut:
    def __init__(self, consumers: Sequence[Consumer]) -> None:
        self.consumers = list(consumers)

    def offer(self, batch: UpdateBatch, reason: np.ndarray, wall_s: float) -> None:
        if self.consumers and len(batch):
            item = Ingested(batch, reason, wall_s)
            for c in self.consumers:
                c.offer(item)

    def start(self) -> None:
        for c in self.consumers:
            c.start()

    def stop(self) -> None:
        for c in self.consumers:
            c.stop()
