"""Several pipeline batches out at once (services/gateway/pipeline.py, ``inflight``): calls that
settle out of order never put an older signal after a newer one (memory, Subscribe, the shared
hash), a stock is never in two calls at once, and at most ``inflight`` batches are out."""

from __future__ import annotations

import asyncio

import numpy as np

from rtvol.services.gateway.hub import Hub
from rtvol.services.gateway.memory import WindowMemory
from rtvol.services.gateway.pipeline import Pipeline
from rtvol.services.gateway.signal import Signal
from tests.unit.test_pipeline_units import _batch


class _GatedPredictor:
    """Each call waits until the test opens its gate, so calls settle in the order the test picks."""

    def __init__(self, memory: WindowMemory) -> None:
        self.memory = memory
        self.calls: list[tuple[list[int], list[int], asyncio.Event]] = []  # ids, versions, gate
        self.out: set[int] = set()  # stocks in a call now
        self.overlaps: list[int] = []  # a stock sent while a call of it was out
        self.most_out = self._calls_out = 0
        self.failing = False  # the next call to settle raises (as a batch whose tiers all failed)

    async def infer_held(self, idx: np.ndarray, deadline: float, call_us: list[int]) -> list[Signal]:
        ids, versions = idx.tolist(), self.memory.version[idx].tolist()
        self.overlaps += [s for s in ids if s in self.out]
        self.out |= set(ids)
        self._calls_out += 1
        self.most_out = max(self.most_out, self._calls_out)
        gate = asyncio.Event()
        self.calls.append((ids, versions, gate))
        call_us.append(1)
        try:
            await gate.wait()
        finally:
            self._calls_out -= 1
            self.out -= set(ids)
        call_us.append(2)
        if self.failing:
            self.failing = False
            raise RuntimeError("every tier failed")
        signals = [Signal(s, rv=0.1, tier=1, window_version=v) for s, v in zip(ids, versions, strict=True)]
        self.memory.settle(signals)
        return signals


class _Cache:
    def __init__(self) -> None:
        self.local: dict[int, list[int]] = {}  # per stock, the versions put in the LRU, in order
        self.hash: dict[int, int] = {}

    def put_local(self, signals: list[Signal]) -> None:
        for s in signals:
            self.local.setdefault(s.stock_id, []).append(s.window_version)

    async def put(self, signals: list[Signal]) -> None:
        self.hash.update((s.stock_id, s.window_version) for s in signals)


async def _turns(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def _pushed(sub_signals: list[Signal]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for s in sub_signals:
        out.setdefault(s.stock_id, []).append(s.window_version)
    return out


def _started(stocks: int, inflight: int, cache: _Cache | None = None, hub: Hub | None = None
             ) -> tuple[WindowMemory, _GatedPredictor, Pipeline]:
    """A running pipeline over ``stocks`` whose calls wait for the test to open their gates."""
    mem = WindowMemory(stocks)
    fake = _GatedPredictor(mem)
    pipeline = Pipeline(mem, fake, _Cache() if cache is None else cache,  # type: ignore[arg-type]
                        Hub() if hub is None else hub, max_batch=10, deadline_s=1.0, inflight=inflight)
    pipeline.start()
    return mem, fake, pipeline


def test_calls_that_settle_out_of_order_keep_each_stocks_signals_in_version_order() -> None:
    async def run() -> None:
        hub, cache = Hub(), _Cache()
        sub = hub.subscribe(None)
        taken: list[Signal] = []  # taken after each settles: a subscriber keeps only a stock's newest

        async def take() -> None:
            if sub.pending:
                taken.extend(await sub.take() or [])
        mem, fake, pipeline = _started(4, 2, cache, hub)
        mem.hold(_batch([0, 1], [1, 1]))
        await _turns()
        mem.hold(_batch([0, 2], [2, 1]))  # stock 0's newer window while its call is out
        await _turns()
        assert [(ids, v) for ids, v, _ in fake.calls] == [([0, 1], [1, 1]), ([2], [1])]  # 0 waits
        fake.calls[1][2].set()  # the later call settles first
        await _turns()
        await take()
        assert mem.current(2) is not None and mem.current(0) is None
        assert len(fake.calls) == 2  # stock 0 is still in the first call: not sent again
        fake.calls[0][2].set()
        await _turns()
        await take()
        assert [(ids, v) for ids, v, _ in fake.calls[2:]] == [([0], [2])]  # now its newer window
        fake.calls[2][2].set()
        await _turns()
        await pipeline.stop()
        await take()
        pushed = _pushed(taken)
        assert pushed == {0: [1, 2], 1: [1], 2: [1]}
        assert cache.local == pushed and cache.hash == {0: 2, 1: 1, 2: 1}
        assert [mem.current(s).window_version for s in range(3)] == [2, 1, 1]  # type: ignore[union-attr]
        assert not fake.overlaps and not mem.busy.any()

    asyncio.run(run())


def test_at_most_inflight_batches_are_out_and_later_windows_leave_together_when_one_settles() -> None:
    async def run() -> None:
        mem, fake, pipeline = _started(6, 2)
        for sid in range(4):  # one window at a time: each finds the pipeline awake
            mem.hold(_batch([sid], [1]))
            await _turns()
        assert [ids for ids, _, _ in fake.calls] == [[0], [1]] and fake.most_out == 2
        fake.calls[1][2].set()
        await _turns()
        assert [ids for ids, _, _ in fake.calls[2:]] == [[2, 3]]  # waited for a slot, left together
        for _, _, gate in fake.calls:
            gate.set()
        await _turns()
        assert fake.most_out == 2 and all(mem.current(s) is not None for s in range(4))
        await pipeline.stop()

    asyncio.run(run())


def test_a_failed_batch_frees_its_slot_and_its_stocks() -> None:
    async def run() -> None:
        mem, fake, pipeline = _started(3, 1)
        mem.hold(_batch([0], [1]))
        await _turns()
        mem.hold(_batch([0, 1], [2, 1]))  # inflight=1: waits for the call out
        await _turns()
        assert len(fake.calls) == 1
        fake.failing = True
        fake.calls[0][2].set()
        await _turns()
        assert [(ids, v) for ids, v, _ in fake.calls[1:]] == [([0, 1], [2, 1])]
        fake.calls[1][2].set()
        await _turns()
        assert mem.current(0) is not None and mem.current(0).window_version == 2  # type: ignore[union-attr]
        await pipeline.stop()

    asyncio.run(run())


def test_a_stop_cancels_the_batches_out_and_frees_their_stocks() -> None:
    async def run() -> None:
        mem, fake, pipeline = _started(2, 2)
        mem.hold(_batch([0], [1]))
        await _turns()
        mem.hold(_batch([1], [1]))
        await _turns()
        assert len(fake.calls) == 2
        await asyncio.wait_for(pipeline.stop(), 2.0)  # no gate opened: the calls are cancelled
        assert not mem.busy.any() and not fake.out

    asyncio.run(run())


class _Sidecar:
    """A sidecar client whose calls each wait for the test to open their gate."""

    model = "inflight_unit"

    def __init__(self) -> None:
        self.calls: list[tuple[int, asyncio.Event]] = []  # rows, gate

    async def infer(self, windows: np.ndarray, version: str = ""
                    ) -> tuple[dict[str, np.ndarray], str, float | None]:
        gate = asyncio.Event()
        self.calls.append((len(windows), gate))
        await gate.wait()
        return _outputs(len(windows)), "1", 0.001


class _Local:
    name, version = "inflight_unit", "1"

    def infer(self, windows: np.ndarray) -> dict[str, np.ndarray]:
        return _outputs(len(windows))


def _outputs(n: int) -> dict[str, np.ndarray]:
    return {"rv": np.full((n, 1), 0.1, np.float32), "direction": np.full((n, 3), 1 / 3, np.float32),
            "momentum": np.zeros((n, 1), np.float32)}


def test_while_half_open_only_one_of_the_batches_out_is_a_probe_the_others_get_tier_2() -> None:
    from opentelemetry import trace

    from rtvol.services.gateway.breaker import Breaker, State
    from rtvol.services.gateway.cache import SignalCache
    from rtvol.services.gateway.fanin import Coalescer
    from rtvol.services.gateway.kelly import KellyTable
    from rtvol.services.gateway.predictor import FeatureSource, Predictor, Tiers
    from rtvol.services.gateway.tier1 import Tier1
    from rtvol.services.gateway.tier3 import VolCache

    async def run() -> None:
        sidecar = _Sidecar()
        breaker = Breaker("inflight_unit", open_s=0.0, probes=2, latency_budget_s=0.005)
        tier1 = Tier1(sidecar, breaker, timeout_s=5.0)  # type: ignore[arg-type]
        tiers = Tiers(tier1, Coalescer(tier1.batch, 64, max_inflight=3), _Local(), VolCache(None, 1.0, 1.0))  # type: ignore[arg-type]
        cache = SignalCache(16)
        predictor = Predictor(features=FeatureSource(None, Breaker("store_unit"), 1.0), tiers=tiers,
                              cache=cache, kelly=KellyTable(), stocks=4, deadline_s=10.0,
                              tracer=trace.get_tracer("unit"))
        mem = predictor.memory = WindowMemory(4)
        pipeline = Pipeline(mem, predictor, cache, Hub(), max_batch=10, deadline_s=10.0, inflight=3)
        breaker.trip()  # open_s 0: the next allow() is half-open's probe
        pipeline.start()
        for sid in range(3):  # three batches, each while the ones before are out
            mem.hold(_batch([sid], [1]))
            await _turns()
        assert breaker.state is State.HALF_OPEN and len(sidecar.calls) == 1  # one probe out
        assert mem.current(1).tier == 2 and mem.current(2).tier == 2  # type: ignore[union-attr]
        sidecar.calls[0][1].set()
        await _turns()
        assert mem.current(0).tier == 1  # type: ignore[union-attr]
        mem.hold(_batch([1, 2], [2, 2]))  # the second probe closes it
        await _turns()
        sidecar.calls[1][1].set()
        await _turns()
        assert breaker.state is State.CLOSED and [rows for rows, _ in sidecar.calls] == [1, 2]
        await pipeline.stop()

    asyncio.run(run())
