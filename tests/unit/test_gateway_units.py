"""Gateway building blocks without processes: breaker, Kelly table, fan-in, validation."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from rtvol.errors import InvalidInput
from rtvol.featurestore import VolEstimate
from rtvol.services.gateway import validation
from rtvol.services.gateway.breaker import Breaker, State
from rtvol.services.gateway.fanin import Coalescer
from rtvol.services.gateway.kelly import KellyTable
from rtvol.services.gateway.tier3 import VolCache


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_breaker_opens_on_error_rate_probes_half_open_and_closes() -> None:
    clock = Clock()
    b = Breaker("t1", window=10, min_calls=4, error_rate=0.5, open_s=1.0, probes=2, clock=clock)
    for ok in (True, False, True):
        assert b.allow()
        b.record(ok)
    assert b.state is State.CLOSED  # 3 calls < min_calls
    b.record(False)  # 2 of 4 failed
    assert b.state is State.OPEN and not b.allow()
    clock.t = 1.01
    assert b.allow() and b.state is State.HALF_OPEN
    assert not b.allow()  # one probe at a time
    b.record(True)
    assert b.allow()
    b.record(True)
    assert b.state is State.CLOSED and b.allow()


def test_breaker_counts_latency_over_budget_and_reopens_on_failed_probe() -> None:
    clock = Clock()
    b = Breaker("t2", window=4, min_calls=2, error_rate=0.5, open_s=0.5, probes=1,
                latency_budget_s=0.005, clock=clock)
    b.record(True, 0.001)
    b.record(True, 0.050)  # slow = failure
    assert b.state is State.OPEN
    clock.t = 0.6
    assert b.allow()
    b.record(False)
    assert b.state is State.OPEN and not b.allow()


def test_breaker_window_forgets_old_failures() -> None:
    b = Breaker("t3", window=4, min_calls=4, error_rate=0.75, clock=Clock())
    for ok in (False, False, True, True, True, True, False, False):
        b.record(ok)
    assert b.state is State.CLOSED  # never 3 failures among the last 4


def formula(down: float, flat: float, up: float, rv: float, cap: float, target: float) -> float:
    p = max(up, down) / (up + down)
    f = min(cap, (1 - flat) * (2 * p - 1) * min(1.0, target / rv))
    return f if up >= down else -f


@pytest.mark.parametrize("probs,rv", [((0.1, 0.2, 0.7), 0.001), ((0.6, 0.3, 0.1), 0.002),
                                      ((0.0, 0.0, 1.0), 0.0005), ((0.3, 0.4, 0.3), 0.01),
                                      ((0.05, 0.05, 0.9), 0.05)])
def test_kelly_table_matches_the_formula_within_bin_resolution(probs: tuple[float, float, float],
                                                                rv: float) -> None:
    table = KellyTable(cap=0.25, target_vol=0.003)
    got = table.fraction(*probs, rv)
    assert abs(got) <= 0.25
    assert got == pytest.approx(formula(*probs, rv, 0.25, 0.003), abs=0.02 + 0.15 * abs(got))


def test_kelly_is_monotone_in_edge_signed_and_capped() -> None:
    table = KellyTable(cap=0.1)
    ups = [table.fraction(1 - u - 0.1, 0.1, u, 0.001) for u in np.linspace(0.45, 0.9, 10)]
    assert ups == sorted(ups) and max(ups) == pytest.approx(0.1)
    assert table.fraction(0.7, 0.1, 0.2, 0.001) < 0 < table.fraction(0.2, 0.1, 0.7, 0.001)
    assert table.fraction(0.0, 1.0, 0.0, 0.001) == 0.0
    # a higher predicted volatility never sizes up
    assert table.fraction(0.1, 0.1, 0.8, 0.02) < table.fraction(0.1, 0.1, 0.8, 0.002)


async def test_fanin_coalesces_concurrent_requests_and_returns_each_its_rows() -> None:
    batches: list[int] = []

    async def model(x: np.ndarray) -> dict[str, np.ndarray]:
        batches.append(len(x))
        await asyncio.sleep(0)
        return {"rv": x[:, 0, 0:1] * 2}

    fanin = Coalescer(model, max_batch=8)
    inputs = [np.full((n, 50, 12), i, np.float32) for i, n in enumerate([1, 3, 2, 1, 5], start=1)]
    outs = await asyncio.gather(*(fanin.submit(x) for x in inputs))
    for i, (x, out) in enumerate(zip(inputs, outs, strict=True), start=1):
        assert out["rv"].shape == (len(x), 1) and (out["rv"] == 2 * i).all()
    assert sum(batches) == 12 and max(batches) <= 8 and len(batches) == 2
    big = await fanin.submit(np.arange(20, dtype=np.float32).repeat(600).reshape(20, 50, 12))
    assert big["rv"][:, 0].tolist() == [2 * i for i in range(20)]


async def test_fanin_failure_reaches_every_caller_of_the_batch() -> None:
    async def broken(x: np.ndarray) -> dict[str, np.ndarray]:
        raise RuntimeError("sidecar gone")

    fanin = Coalescer(broken, max_batch=64)
    results = await asyncio.gather(*(fanin.submit(np.zeros((1, 50, 12), np.float32)) for _ in range(3)),
                                   return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)


async def test_fanin_sends_at_once_when_idle_and_batches_what_arrives_while_busy() -> None:
    started: list[int] = []
    release = asyncio.Event()

    async def model(x: np.ndarray) -> dict[str, np.ndarray]:
        started.append(len(x))
        await release.wait()
        return {"rv": x[:, 0, 0:1]}

    fanin = Coalescer(model, max_batch=64, max_inflight=1)
    first = asyncio.create_task(fanin.submit(np.zeros((1, 50, 12), np.float32)))
    for _ in range(3):  # a few loop turns, no timer: an idle coalescer has sent it already
        await asyncio.sleep(0)
    assert started == [1]
    later = [asyncio.create_task(fanin.submit(np.full((1, 50, 12), i, np.float32))) for i in range(5)]
    for _ in range(3):
        await asyncio.sleep(0)
    assert started == [1]  # one batch is out: the others wait for it
    release.set()
    outs = await asyncio.gather(first, *later)
    assert started == [1, 5]  # ... and leave together when it comes back
    assert [float(o["rv"][0, 0]) for o in outs[1:]] == [0.0, 1.0, 2.0, 3.0, 4.0]


@pytest.mark.parametrize("ids,reason", [([], "empty_ids"), (list(range(11)), "too_many_ids")])
def test_validation_names_the_field(ids: list[int], reason: str) -> None:
    with pytest.raises(InvalidInput, match="stock_ids") as err:
        validation.check_ids(ids, max_ids=10)
    assert err.value.reason == reason
    with pytest.raises(InvalidInput, match="max_staleness_ms"):
        validation.check_staleness(-1)
    assert validation.check_staleness(None) == 0.0


class _StopRightAfterRead:
    """A feature store whose volatility read asks the cache to stop as it returns: the
    stop lands while the read's result is on its way back (issue 16's hang)."""

    def __init__(self) -> None:
        self.vol: VolCache | None = None
        self.stopper: asyncio.Task[None] | None = None

    async def read_vol(self) -> VolEstimate:
        assert self.vol is not None
        if self.stopper is None:
            self.stopper = asyncio.create_task(self.vol.stop())
        return VolEstimate(np.arange(2, dtype=np.int32), np.full(2, 0.01, np.float32), 1)


async def test_vol_cache_stops_when_stop_lands_right_after_a_read() -> None:
    store = _StopRightAfterRead()
    vol = store.vol = VolCache(store, refresh_s=0.001, timeout_s=1.0)  # type: ignore[arg-type]
    vol.start()
    while store.stopper is None:
        await asyncio.sleep(0)
    # asyncio.wait, not a timeout: cancelling the waiter would cancel the stop it waits for
    done, _ = await asyncio.wait([store.stopper], timeout=0.5)  # BackgroundTask gives up at 1 s
    while not store.stopper.done():  # the failure case: cancel until a cancel lands
        for task in asyncio.all_tasks() - {asyncio.current_task()}:
            task.cancel()
        await asyncio.sleep(0.01)
    assert done, "VolCache.stop() hung: the refresh loop swallowed its cancellation"


class _SwallowsItsCancellation:
    """A feature store whose volatility read turns a cancellation into an error of its own, as
    a client library cleaning up its connection may: the refresh loop's ``except Exception``
    takes it for an outage."""

    async def read_vol(self) -> VolEstimate:
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            raise ConnectionError("connection closed while reading") from None
        return VolEstimate(np.arange(2, dtype=np.int32), np.full(2, 0.01, np.float32), 1)


async def test_vol_cache_stops_when_a_read_swallows_the_cancellation() -> None:
    vol = VolCache(_SwallowsItsCancellation(), refresh_s=0.001, timeout_s=1.0)  # type: ignore[arg-type]
    vol.start()
    await asyncio.sleep(0.05)
    task = vol._task._task
    assert task is not None
    stop = asyncio.create_task(vol.stop())
    done, _ = await asyncio.wait([stop], timeout=0.5)  # BackgroundTask gives up at 1 s
    assert done and task.done(), "VolCache.stop() hung: the read turned its cancellation into an error"
    assert task.cancelled()
