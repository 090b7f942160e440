"""Tier 1: the model sidecar (its client: sidecar_client.py) behind a breaker, a timeout and a
readiness probe. This module loads no protobuf descriptors, so what only needs the breaker's
rules (the shadow, readiness, tests next to tritonclient's copy of the inference protos) can
import it."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

import numpy as np

from rtvol.services.gateway import labels, metrics
from rtvol.services.gateway.breaker import Breaker, State
from rtvol.tasks import BackgroundTask

if TYPE_CHECKING:
    from rtvol.services.gateway.sidecar_client import Answer

log = logging.getLogger(__name__)
PROBE_TIMEOUT_S = 1.0  # a first connection on a busy machine takes longer than one batch may


def iso(wall_s: float) -> str:
    """A wall-clock time as ISO 8601 UTC to the millisecond, e.g. 2026-12-01T20:51:07.114Z."""
    return datetime.fromtimestamp(wall_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class UpstreamError(RuntimeError):
    """The sidecar failed a request, or its stream broke."""


class ModelClient(Protocol):
    """What tier 1 calls: the sidecar's client (sidecar_client.py), or the models of this
    process (rtvol serve embedded --model)."""

    model: str

    async def infer(self, windows: np.ndarray, version: str = "") -> Answer: ...

    async def ready(self, timeout_s: float) -> str: ...

    async def close(self) -> None: ...


class Tier1:
    """The sidecar behind its breaker and a timeout; a batch slower than the latency budget
    counts as a failure, so a slow sidecar opens the breaker as a dead one does. The budget
    and the timeout grow by ``per_window_s`` for each window after the first: a large
    pipeline batch takes longer without the sidecar being slow.

    The budget judges the sidecar's own time for a call (it reports it, decode to encode),
    not the wall time the gateway sees: that also holds the hop and the gateway's own delays
    (its event loop, its tier-2 work on shared cores), 2-4 ms a call on the 2-core VM, which
    put most calls over the budget and moved work into the gateway, where it made those
    delays worse (measured: docs/BENCHMARKS.md, "With a version in shadow").
    ``judge_wall`` (or a server that does not report its time) judges the wall time. The
    timeout always bounds the wall time: a sidecar that does not answer still fails.

    Half-open probes are small: a batch sent while the breaker is half-open goes as calls of
    ``probe_windows`` windows until the breaker closes (``breaker_probes`` successes), then
    its rest as one call. A probe of a few windows takes a fraction of the budget even on a
    busy CPU, so it fails for a sidecar that is down, stalled or slow per call, not for the
    size of the batch it happened to be (a large first batch after an idle second failed
    most probes on the 2-core VM); a sidecar too slow for the load is judged, as before, by
    the closed breaker's window.

    A background probe asks the sidecar's ModelReady every ``probe_s``; while the answer is
    not "ready" (unreachable, or its model not loaded) it keeps the breaker open, so tier 2
    answers without trying tier 1 even when no request has failed yet, and /readyz says why
    and since when. Once the probe passes, the breaker's own half-open calls close it."""

    def __init__(self, client: ModelClient, breaker: Breaker, timeout_s: float, probe_s: float = 1.0,
                 per_window_s: float = 0.0, judge_wall: bool = False, probe_windows: int = 0) -> None:
        """``probe_windows``: 0 sends a half-open probe's batch whole."""
        self.client, self.breaker, self.timeout_s, self.probe_s = client, breaker, timeout_s, probe_s
        self.per_window_s, self.judge_wall, self.probe_windows = per_window_s, judge_wall, probe_windows
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
        """Tier 1's answer for ``windows`` (the caller's ``breaker.allow()`` let it through);
        raises when the sidecar fails, or when the breaker opens or refuses midway through a
        half-open batch (tier 2 then answers all of it)."""
        n = self.probe_windows
        if not n or self.breaker.state is not State.HALF_OPEN or len(windows) <= n:
            return await self._call(windows)
        parts, done = [], 0
        while done < len(windows):
            state = self.breaker.state
            if state is State.OPEN:
                raise UpstreamError("sidecar breaker opened by a probe")
            if state is State.HALF_OPEN and done and not self.breaker.allow():
                raise UpstreamError("sidecar breaker half-open: another probe is out")
            end = done + n if state is State.HALF_OPEN else len(windows)
            parts.append(await self._call(windows[done:end]))
            done = end
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    async def _call(self, windows: np.ndarray) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        state = self.breaker.state  # half-open: this call is a probe
        allowance = self.per_window_s * (len(windows) - 1)
        self.in_flight += 1
        self.idle.clear()
        try:
            async with asyncio.timeout(self.timeout_s + allowance):
                out, version, server_s = await self.client.infer(windows)
            if version != self.version:  # a version refused fails every call: tier 2 answers
                if labels.refuses(self.client.model, version, "the sidecar"):
                    raise UpstreamError(f"the sidecar's {self.client.model} version {version!r} is refused")
                self.version = version
        except Exception as e:
            metrics.UPSTREAM_ERRORS.labels("sidecar", type(e).__name__).inc()
            self._record(state, False, len(windows), time.perf_counter() - start, None, allowance)
            raise
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self.idle.set()
        self._record(state, True, len(windows), time.perf_counter() - start, server_s, allowance)
        return out

    def _record(self, sent: State, ok: bool, rows: int, wall_s: float, server_s: float | None,
                allowance_s: float) -> None:
        """Tell the breaker; count the call's times by the breaker's state when it was sent;
        say why when this call opens the breaker."""
        judged = wall_s if self.judge_wall or server_s is None else server_s
        latency = judged - allowance_s
        if ok:
            label = sent.name.lower()
            metrics.TIER1_SECONDS.labels("wall", label).observe(wall_s)
            if server_s is not None:
                metrics.TIER1_SECONDS.labels("sidecar", label).observe(server_s)
            if latency > self.breaker.latency_budget_s:
                metrics.TIER1_OVER_BUDGET.labels(label).inc()
        was = self.breaker.state
        self.breaker.record(ok, latency)
        self.last_load = latency / self.breaker.latency_budget_s if ok else 1.0
        if self.breaker.state is State.OPEN and was is not State.OPEN:
            log.warning("sidecar breaker opened (was %s) by a batch of %d windows: %s, wall %.1f ms, "
                        "sidecar %s, budget %.1f ms", was.name.lower(), rows, "answered" if ok else "failed",
                        wall_s * 1e3, "-" if server_s is None else f"{server_s * 1e3:.1f} ms",
                        (self.breaker.latency_budget_s + allowance_s) * 1e3)
