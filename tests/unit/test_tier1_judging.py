"""Tier 1's breaker judges the sidecar's own time, and its half-open probes are small: a
fake sidecar client (the real one: tests/integration) answers rv = each window's first value,
after ``wall_s``, reporting ``server_s`` as its own time."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from rtvol.services.gateway.breaker import Breaker, State
from rtvol.services.gateway.tier1 import Tier1, UpstreamError

BUDGET_S = 0.005


class Sidecar:
    model = "tier1_unit"

    def __init__(self, wall_s: float = 0.0, server_s: float | None = 0.001) -> None:
        self.wall_s, self.server_s = wall_s, server_s
        self.sizes: list[int] = []

    async def infer(self, windows: np.ndarray, version: str = ""
                    ) -> tuple[dict[str, np.ndarray], str, float | None]:
        self.sizes.append(len(windows))
        await asyncio.sleep(self.wall_s)
        return {"rv": windows[:, 0, :1].copy()}, "1", self.server_s


def _tier1(sidecar: Sidecar, **kwargs: object) -> Tier1:
    breaker = Breaker("sidecar_unit", window=4, min_calls=2, open_s=0.0, probes=2, latency_budget_s=BUDGET_S)
    return Tier1(sidecar, breaker, timeout_s=1.0, **kwargs)  # type: ignore[arg-type]


def _windows(n: int) -> np.ndarray:
    x = np.zeros((n, 50, 12), np.float32)
    x[:, 0, 0] = np.arange(n)
    return x


def _half_open(t1: Tier1) -> None:
    t1.breaker.trip()
    assert t1.breaker.allow()  # open_s 0: half-open, this call is the probe
    assert t1.breaker.state is State.HALF_OPEN


@pytest.mark.parametrize(("judge_wall", "opens"), [(False, False), (True, True)])
def test_the_budget_judges_the_sidecars_own_time(judge_wall: bool, opens: bool) -> None:
    """Wall 20 ms (time on the gateway's side), the sidecar's own 1 ms: not a slow sidecar,
    unless the wall time is judged."""
    t1 = _tier1(Sidecar(wall_s=0.02, server_s=0.001), judge_wall=judge_wall)

    async def run() -> None:
        for _ in range(3):
            await t1.batch(_windows(4))

    asyncio.run(run())
    assert (t1.breaker.state is State.OPEN) is opens


def test_a_server_that_does_not_report_its_time_is_judged_on_wall_time() -> None:
    t1 = _tier1(Sidecar(wall_s=0.02, server_s=None))

    async def run() -> None:
        for _ in range(3):
            await t1.batch(_windows(4))

    asyncio.run(run())
    assert t1.breaker.state is State.OPEN


def test_half_open_probes_are_small_then_the_rest_goes_whole() -> None:
    sidecar = Sidecar()
    t1 = _tier1(sidecar, probe_windows=8)
    _half_open(t1)
    out = asyncio.run(t1.batch(_windows(100)))
    assert sidecar.sizes == [8, 8, 84]  # two probes close the breaker
    assert t1.breaker.state is State.CLOSED
    np.testing.assert_array_equal(out["rv"][:, 0], np.arange(100))  # rows in order


def test_a_slow_probe_reopens_and_the_batch_goes_to_tier_2() -> None:
    sidecar = Sidecar(server_s=2 * BUDGET_S)  # slow per call whatever the batch: a stalled sidecar
    t1 = _tier1(sidecar, probe_windows=8)
    _half_open(t1)
    with pytest.raises(UpstreamError, match="opened by a probe"):
        asyncio.run(t1.batch(_windows(100)))
    assert sidecar.sizes == [8]
    assert t1.breaker.state is State.OPEN


def test_without_probe_windows_the_batch_is_the_probe() -> None:
    sidecar = Sidecar()
    t1 = _tier1(sidecar)
    _half_open(t1)
    asyncio.run(t1.batch(_windows(100)))
    assert sidecar.sizes == [100]
    assert t1.breaker.state is State.HALF_OPEN  # one success of the two needed
