"""The gateway's shadow queue without processes: `offer` never waits, a full queue drops and
counts, queued batches of one version leave together, a failed shadow call is counted and the
loop goes on, and the signals reach the scorer with role=shadow and their window's end step.
The shadow yields to served work (the real Tier1 in front of a stand-in sidecar): it waits
while a served call is out, and drops (counted by reason) while the breaker is not closed or
the last served call was slow.
(The real sidecar behind it: tests/integration/test_shadow_promote.py.)"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import numpy as np
from prometheus_client import REGISTRY

from rtvol.features.spec import N_FEATURES, STEPS
from rtvol.services.gateway.breaker import Breaker
from rtvol.services.gateway.shadow import Shadow
from rtvol.services.gateway.signal import Signal
from rtvol.services.gateway.tier1 import Tier1

MODEL = "shadow_unit"


class Sidecar:
    """Stands in for sidecar_client.SidecarClient (the real one: the integration test). Answers rv = the
    window's first value; fails while ``failing``; held until ``go``."""

    model = MODEL

    def __init__(self) -> None:
        self.calls: list[tuple[int, str]] = []
        self.go = asyncio.Event()
        self.failing = False
        self.delay_s = 0.0

    async def infer(self, windows: np.ndarray, version: str = ""
                    ) -> tuple[dict[str, np.ndarray], str, float | None]:
        await self.go.wait()
        await asyncio.sleep(self.delay_s)
        self.calls.append((len(windows), version))
        if self.failing:
            raise RuntimeError("sidecar said no")
        n = len(windows)
        rv = windows[:, 0, :1].astype(np.float32)
        rv[rv == 666] = np.nan
        return {"rv": rv, "direction": np.full((n, 3), 1 / 3, np.float32),
                "momentum": np.zeros((n, 1), np.float32)}, version, None


class Scorer:
    def __init__(self) -> None:
        self.recorded: list[tuple[list[Signal], str]] = []

    def record(self, signals: list[Signal], role: str = "serving") -> int:
        self.recorded.append((signals, role))
        return len(signals)


def _windows(*first: float) -> np.ndarray:
    x = np.zeros((len(first), STEPS, N_FEATURES), np.float32)
    x[:, 0, 0] = first
    return x


def _count(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"model": MODEL, **labels}) or 0.0


def test_offers_never_wait_a_full_queue_drops_and_batches_coalesce() -> None:
    async def run() -> None:
        sidecar, scorer = Sidecar(), Scorer()
        shadow = Shadow(cast(Any, sidecar), max_batch=3, timeout_s=5, max_queued=3,
                        scorer=cast(Any, scorer))
        shadow.offer([0], _windows(1.0), [10], [50])  # no shadow version: nothing queued
        shadow.version = "2"
        shadow.start()
        dropped = _count("rtvol_gateway_shadow_dropped_total", version="2", reason="queue_full")
        for sid in range(5):  # the sidecar is held: the queue fills, two are dropped
            shadow.offer([sid], _windows(sid + 1.0), [10 + sid], [50 + sid])
        assert _count("rtvol_gateway_shadow_dropped_total", version="2", reason="queue_full") == dropped + 2
        await asyncio.sleep(0)  # the sender takes the queued batches (and waits on the sidecar)
        shadow.offer([7, 8], _windows(7.0, 8.0), [17, 18], [57, 58])
        sidecar.go.set()
        for _ in range(100):
            if sum(len(s) for s, _ in scorer.recorded) == 5:
                break
            await asyncio.sleep(0.01)
        await shadow.stop()
        # the three queued 1-row batches leave as one call of 3 rows (max_batch), then the 2 rows
        assert sidecar.calls == [(3, "2"), (2, "2")]
        signals = [s for batch, _ in scorer.recorded for s in batch]
        assert {role for _, role in scorer.recorded} == {"shadow"}
        assert [(s.stock_id, s.rv, s.version, s.tier, s.feature_written_us, s.window_end_step)
                for s in signals] == [(0, 1.0, "2", 1, 10, 50), (1, 2.0, "2", 1, 11, 51),
                                      (2, 3.0, "2", 1, 12, 52), (7, 7.0, "2", 1, 17, 57),
                                      (8, 8.0, "2", 1, 18, 58)]
    asyncio.run(run())


def test_a_failed_or_non_finite_shadow_is_counted_and_the_loop_goes_on() -> None:
    async def run() -> None:
        sidecar, scorer = Sidecar(), Scorer()
        sidecar.go.set()
        shadow = Shadow(cast(Any, sidecar), max_batch=8, timeout_s=5, scorer=cast(Any, scorer))
        shadow.version = "3"
        shadow.start()
        failed = _count("rtvol_gateway_shadow_errors_total", version="3", kind="RuntimeError")
        non_finite = _count("rtvol_gateway_shadow_errors_total", version="3", kind="non_finite")
        sidecar.failing = True
        shadow.offer([0], _windows(1.0), [1], [50])
        await asyncio.sleep(0.05)
        sidecar.failing = False
        shadow.offer([1, 2], _windows(666.0, 2.0), [1, 1], [50, 50])
        await asyncio.sleep(0.05)
        await shadow.stop()
        assert _count("rtvol_gateway_shadow_errors_total", version="3", kind="RuntimeError") == failed + 1
        assert _count("rtvol_gateway_shadow_errors_total", version="3", kind="non_finite") == non_finite + 1
        assert [[s.stock_id for s in batch] for batch, _ in scorer.recorded] == [[2]]
    asyncio.run(run())


def test_a_batch_larger_than_a_shadow_call_is_split() -> None:
    async def run() -> None:
        sidecar, scorer = Sidecar(), Scorer()
        sidecar.go.set()
        shadow = Shadow(cast(Any, sidecar), max_batch=2, timeout_s=5, scorer=cast(Any, scorer))
        shadow.version = "4"
        shadow.start()
        shadow.offer([0, 1, 2, 3, 4], _windows(1, 2, 3, 4, 5), [0] * 5, list(range(5)))
        shadow.offer([5], _windows(6), [0], [5])
        for _ in range(100):
            if len(sidecar.calls) == 3:
                break
            await asyncio.sleep(0.01)
        await shadow.stop()
        assert sidecar.calls == [(2, "4"), (2, "4"), (2, "4")]  # the rest coalesces with the next
        signals = [s for batch, _ in scorer.recorded for s in batch]
        assert [(s.stock_id, s.rv, s.window_end_step) for s in signals] == [
            (i, i + 1.0, i) for i in range(6)]
    asyncio.run(run())


async def _until(done: Any) -> None:
    for _ in range(200):
        if done():
            return
        await asyncio.sleep(0.005)


def _yielding(budget_s: float = 10.0) -> tuple[Sidecar, Sidecar, Tier1, Shadow]:
    """A shadow in front of one stand-in sidecar, yielding to a real Tier1 in front of another."""
    served_sidecar, shadow_sidecar = Sidecar(), Sidecar()
    served_sidecar.go.set()
    shadow_sidecar.go.set()
    served = Tier1(cast(Any, served_sidecar), Breaker("shadow_unit_served", latency_budget_s=budget_s), 5.0)
    shadow = Shadow(cast(Any, shadow_sidecar), max_batch=8, timeout_s=5, served=served)
    shadow.version = "5"
    shadow.start()
    return served_sidecar, shadow_sidecar, served, shadow


def test_a_shadow_call_waits_while_a_served_call_is_out() -> None:
    async def run() -> None:
        served_sidecar, shadow_sidecar, served, shadow = _yielding()
        served_sidecar.go.clear()
        call = asyncio.create_task(served.batch(_windows(1.0)))
        await asyncio.sleep(0)
        assert served.in_flight == 1
        shadow.offer([0], _windows(2.0), [0], [0])
        await asyncio.sleep(0.05)
        assert shadow_sidecar.calls == []  # held back while the served call is out
        served_sidecar.go.set()
        await call
        await _until(lambda: shadow_sidecar.calls)
        await shadow.stop()
        assert (served.in_flight, served_sidecar.calls, shadow_sidecar.calls) == (0, [(1, "")], [(1, "5")])
    asyncio.run(run())


def test_the_shadow_is_dropped_and_counted_while_the_breaker_is_not_closed() -> None:
    async def run() -> None:
        _, shadow_sidecar, served, shadow = _yielding()
        dropped = _count("rtvol_gateway_shadow_dropped_total", version="5", reason="breaker")
        served.breaker.trip()
        shadow.offer([0], _windows(1.0), [0], [0])
        shadow.offer([1], _windows(2.0), [0], [0])
        await _until(lambda: _count("rtvol_gateway_shadow_dropped_total", version="5", reason="breaker")
                     == dropped + 2)
        await shadow.stop()
        assert _count("rtvol_gateway_shadow_dropped_total", version="5", reason="breaker") == dropped + 2
        assert shadow_sidecar.calls == []
    asyncio.run(run())


def test_a_slow_served_call_pauses_the_shadow_until_a_fast_one() -> None:
    async def run() -> None:
        served_sidecar, shadow_sidecar, served, shadow = _yielding(budget_s=0.2)
        dropped = _count("rtvol_gateway_shadow_dropped_total", version="5", reason="served_slow")
        served_sidecar.delay_s = 0.15  # 3/4 of the budget: within it, yet slow
        await served.batch(_windows(1.0))
        assert served.last_load > 0.5
        shadow.offer([0], _windows(1.0), [0], [0])
        await _until(lambda: _count("rtvol_gateway_shadow_dropped_total", version="5", reason="served_slow")
                     > dropped)
        assert shadow_sidecar.calls == []
        served_sidecar.delay_s = 0.0
        await served.batch(_windows(1.0))
        shadow.offer([1], _windows(2.0), [0], [0])
        await _until(lambda: shadow_sidecar.calls)
        await shadow.stop()
        assert shadow_sidecar.calls == [(1, "5")]
        assert _count("rtvol_gateway_shadow_dropped_total", version="5", reason="served_slow") == dropped + 1
    asyncio.run(run())
