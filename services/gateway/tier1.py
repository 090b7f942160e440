"""Tier 1: the model sidecar (its client: sidecar_client.py) behind a breaker, a timeout and a
readiness probe. This module loads no protobuf descriptors, so what only needs the breaker's
rules (the shadow, readiness, tests next to tritonclient's copy of the inference protos) can
import it."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np

from rtvol.services.gateway import metrics
from rtvol.services.gateway.breaker import Breaker, State
from rtvol.tasks import BackgroundTask

if TYPE_CHECKING:
    from rtvol.services.gateway.sidecar_client import SidecarClient

PROBE_TIMEOUT_S = 1.0  # a first connection on a busy machine takes longer than one batch may


def iso(wall_s: float) -> str:
    """A wall-clock time as ISO 8601 UTC to the millisecond, e.g. 2026-12-01T20:51:07.114Z."""
    return datetime.fromtimestamp(wall_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class UpstreamError(RuntimeError):
    """The sidecar failed a request, or its stream broke."""


class Tier1:
    """The sidecar behind its breaker and a timeout; a batch slower than the latency budget
    counts as a failure, so a slow sidecar opens the breaker as a dead one does. The budget
    and the timeout grow by ``per_window_s`` for each window after the first: a large
    pipeline batch takes longer without the sidecar being slow.

    A background probe asks the sidecar's ModelReady every ``probe_s``; while the answer is
    not "ready" (unreachable, or its model not loaded) it keeps the breaker open, so tier 2
    answers without trying tier 1 even when no request has failed yet, and /readyz says why
    and since when. Once the probe passes, the breaker's own half-open calls close it."""

    def __init__(self, client: SidecarClient, breaker: Breaker, timeout_s: float, probe_s: float = 1.0,
                 per_window_s: float = 0.0) -> None:
        self.client, self.breaker, self.timeout_s, self.probe_s = client, breaker, timeout_s, probe_s
        self.per_window_s = per_window_s
        self.version = ""
        # what the shadow yields to (shadow.py): served calls out now, and the last one's
        # latency as a share of its budget (1.0: at the budget)
        self.in_flight, self.last_load = 0, 0.0
        self.idle = asyncio.Event()
        self.idle.set()
        self.down, self.down_since = "sidecar not probed yet", time.time()  # down == "": probe passed
        self._watch = BackgroundTask()

    def status(self) -> tuple[bool, str]:
        """(does the next request try tier 1, why / why not): for /readyz."""
        if self.down:
            return False, f"{self.down} since {iso(self.down_since)}"
        if self.breaker.refusing():
            return False, f"sidecar breaker open since {iso(self.breaker.since)}"
        if self.breaker.state is not State.CLOSED:
            return True, "sidecar breaker half-open: the next request tries tier 1"
        return True, "sidecar ready"

    async def probe(self) -> bool:
        """Ask the sidecar once; when it is not ready, open the breaker. True when ready."""
        reason = await self.client.ready(PROBE_TIMEOUT_S)
        if reason:
            if not self.down:  # was up: down from now (before the first answer: since start)
                self.down_since = time.time()
            self.down = reason
            self.breaker.trip()
        else:
            self.down = ""
        return not reason

    async def wait_ready(self, wait_s: float) -> bool:
        """At start: probe until the sidecar is ready or ``wait_s`` has passed."""
        deadline = time.monotonic() + wait_s
        while not await self.probe():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.1)
        return True

    async def _probe_forever(self) -> None:
        while True:
            await asyncio.sleep(self.probe_s)
            await self.probe()

    def start(self) -> None:
        self._watch.start(self._probe_forever())

    async def stop(self) -> None:
        await self._watch.stop()

    async def batch(self, windows: np.ndarray) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        allowance = self.per_window_s * (len(windows) - 1)
        self.in_flight += 1
        self.idle.clear()
        try:
            async with asyncio.timeout(self.timeout_s + allowance):
                out, self.version = await self.client.infer(windows)
        except Exception as e:
            metrics.UPSTREAM_ERRORS.labels("sidecar", type(e).__name__).inc()
            self.breaker.record(False)
            self.last_load = 1.0
            raise
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self.idle.set()
        latency = time.perf_counter() - start - allowance
        self.breaker.record(True, latency)
        self.last_load = latency / self.breaker.latency_budget_s
        return out
