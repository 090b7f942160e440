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


def test_calls_that_settle_out_of_order_keep_each_stocks_signals_in_version_order() -> None:
    async def run() -> None:
        mem, hub, cache = WindowMemory(4), Hub(), _Cache()
        fake = _GatedPredictor(mem)
        pipeline = Pipeline(mem, fake, cache, hub, max_batch=10, deadline_s=1.0, inflight=2)  # type: ignore[arg-type]
        sub = hub.subscribe(None)
        pipeline.start()
        mem.hold(_batch([0, 1], [1, 1]))
        await _turns()
        mem.hold(_batch([0, 2], [2, 1]))  # stock 0's newer window while its call is out
        await _turns()
        assert [(ids, v) for ids, v, _ in fake.calls] == [([0, 1], [1, 1]), ([2], [1])]  # 0 waits
        fake.calls[1][2].set()  # the later call settles first
        await _turns()
        assert mem.current(2) is not None and mem.current(0) is None
        assert len(fake.calls) == 2  # stock 0 is still in the first call: not sent again
        fake.calls[0][2].set()
        await _turns()
        assert [(ids, v) for ids, v, _ in fake.calls[2:]] == [([0], [2])]  # now its newer window
        fake.calls[2][2].set()
        await _turns()
        await pipeline.stop()
        pushed = _pushed(await sub.take() or [])
        assert pushed == {0: [1, 2], 1: [1], 2: [1]}
        assert cache.local == pushed and cache.hash == {0: 2, 1: 1, 2: 1}
        assert [mem.current(s).window_version for s in range(3)] == [2, 1, 1]  # type: ignore[union-attr]
        assert not fake.overlaps and not mem.busy.any()

    asyncio.run(run())


def test_at_most_inflight_batches_are_out_and_later_windows_leave_together_when_one_settles() -> None:
    async def run() -> None:
        mem = WindowMemory(6)
        fake = _GatedPredictor(mem)
        pipeline = Pipeline(mem, fake, _Cache(), Hub(), max_batch=10, deadline_s=1.0, inflight=2)  # type: ignore[arg-type]
        pipeline.start()
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
        mem = WindowMemory(3)
        fake = _GatedPredictor(mem)
        pipeline = Pipeline(mem, fake, _Cache(), Hub(), max_batch=10, deadline_s=1.0, inflight=1)  # type: ignore[arg-type]
        pipeline.start()
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
        mem = WindowMemory(2)
        fake = _GatedPredictor(mem)
        pipeline = Pipeline(mem, fake, _Cache(), Hub(), max_batch=10, deadline_s=1.0, inflight=2)  # type: ignore[arg-type]
        pipeline.start()
        mem.hold(_batch([0], [1]))
        await _turns()
        mem.hold(_batch([1], [1]))
        await _turns()
        assert len(fake.calls) == 2
        await asyncio.wait_for(pipeline.stop(), 2.0)  # no gate opened: the calls are cancelled
        assert not mem.busy.any() and not fake.out

    asyncio.run(run())
