"""The tick-to-signal hop stamps (rtvol/pipeline_hops.py): the feature service's Watch batches
carry apply, store and send times; the gateway's pipeline adds its own and hands them only to a
subscription that asked; the bench turns them into one latency per hop."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from rtvol.loadtest.bench.pipeline import hop_breakdown
from rtvol.localproc import wait_until
from rtvol.pipeline_hops import HOPS
from rtvol.proto.v1 import features_pb2 as fpb
from rtvol.services.feature.watch import WindowFeed
from rtvol.services.gateway import pipeline as pipeline_module
from rtvol.services.gateway.grpc_api import _pushed
from rtvol.services.gateway.hub import Hub
from rtvol.services.gateway.memory import WindowMemory
from rtvol.services.gateway.pipeline import Pipeline
from rtvol.services.gateway.signal import Signal
from tests.unit.test_pipeline_units import _batch, _state


def test_a_watch_batch_carries_apply_store_and_send_times() -> None:
    async def run() -> None:
        stored = np.zeros(4, np.int64)
        feed = WindowFeed(_state(4, 1), max_batch=10, stored_us=stored)

        async def no_acks() -> Any:
            await asyncio.Event().wait()
            yield fpb.WatchAck()

        stream = feed.stream(no_acks())
        await anext(stream)  # the snapshot
        stored[1] = 1  # stock 1's last write held an older window
        feed.mark(np.array([0, 1]), received_us=100)
        stored[0] = int(feed.applied_us[0]) + 5  # stock 0's new window written before the push
        feed.send()
        batch = await anext(stream)
        applied = list(batch.applied_us)
        assert list(batch.stock_ids) == [0, 1] and all(a >= 100 for a in applied)
        assert list(batch.stored_us) == [applied[0] + 5, 0]  # 0: not in the store when sent
        assert batch.sent_us >= max(applied)
        await stream.aclose()

    asyncio.run(run())


class _Predictor:
    """Answers every held window at once, as tier 1 would."""

    def __init__(self, memory: WindowMemory) -> None:
        self.memory = memory

    async def infer_held(self, idx: np.ndarray, deadline: float, call_us: list[int]) -> list[Signal]:
        call_us.append(1)
        await asyncio.sleep(0)
        call_us.append(2)
        signals = [Signal(int(s), rv=0.1, tier=1, window_version=int(self.memory.version[s])) for s in idx]
        self.memory.settle(signals)
        return signals


class _Cache:
    def put_local(self, signals: list[Signal]) -> None:
        pass


def test_the_pipeline_hands_its_hops_only_to_a_subscription_that_asked() -> None:
    async def run() -> None:
        mem, hub = WindowMemory(3), Hub()
        pipeline = Pipeline(mem, _Predictor(mem), _Cache(), hub, max_batch=10, deadline_s=1.0)  # type: ignore[arg-type]
        plain = hub.subscribe(None)
        assert not hub.wants_hops
        batch = _batch([0, 2], [1, 1], received=10)
        batch.applied_us[:], batch.stored_us[:], batch.sent_us = [20, 21], [0, 30], 40
        mem.hold(batch)
        await pipeline.step(mem.take(10))
        assert [s.hops_us for s in await plain.take() or []] == [(), ()]  # nobody asked: no cost
        traced = hub.subscribe(None, hops=True)
        assert hub.wants_hops
        mem.hold(_batch([0], [2], received=50))  # a feature service without hop stamps
        await pipeline.step(mem.take(10))
        (sig,) = await traced.take() or []
        assert len(sig.hops_us) == len(HOPS) - 1 and sig.hops_us[:4] == (50, 0, 0, 0)
        assert sig.hops_us[HOPS.index("call_start"):HOPS.index("settled")] == (1, 2)
        (message,) = _pushed([sig], now=sig.hops_us[-1] + 7, hops=True)
        assert list(message.hops_us) == [*sig.hops_us, sig.hops_us[-1] + 7]
        assert not _pushed([sig], now=0)[0].hops_us
        hub.unsubscribe(traced)
        assert not hub.wants_hops

    asyncio.run(run())


def test_the_bench_times_each_hop_from_the_known_hop_before_it() -> None:
    row = [1000, 1100, 0, 1300, 1600, 1700, 1800, 2800, 2900, 3000, 3100, 3500]  # stored unknown
    without = [0] * (len(HOPS) + 1)  # a signal without hops (another worker's shard)
    out = hop_breakdown(np.array([row, without], np.int64))
    assert out["signals"] == 1 and out["stored_before_push"] == 0.0
    assert out["stored"]["n"] == 0
    assert round(out["sent"]["p50_ms"], 2) == 0.2  # from applied: the store write came after
    assert round(out["call_end"]["p50_ms"], 2) == 1.0 and round(out["arrived"]["p50_ms"], 2) == 0.4


def test_the_watch_push_is_written_before_the_store_flush_that_the_same_apply_woke() -> None:
    from rtvol.featurestore import InProcessStore
    from rtvol.loadtest.ticks import StepTicks
    from rtvol.services.feature.publisher import Publisher
    from rtvol.services.feature.servicer import Ingestor

    order: list[str] = []

    class Store(InProcessStore):
        async def write(self, *args: Any, **kw: Any) -> None:
            order.append("store")
            await super().write(*args, **kw)

    async def run() -> None:
        state, ticks = _state(2, 1), StepTicks(2)
        for _ in range(2):  # the same ticks as _state's: this feed starts where it ended
            ticks.message([0, 1])
        publisher = Publisher(state, Store("x"), 0.0)
        feed = WindowFeed(state, max_batch=10)
        ingestor = Ingestor(state, publisher, 1000, feed=feed)

        async def no_acks() -> Any:
            await asyncio.Event().wait()
            yield fpb.WatchAck()

        stream = feed.stream(no_acks())
        await anext(stream)  # the snapshot
        publisher.start()
        feed.start()
        await asyncio.sleep(0)  # both tasks wait for work, as they do while a service runs
        ingestor.apply(ticks.message([0, 1]))  # closes a step of both
        assert list((await anext(stream)).stock_ids) == [0, 1]
        order.append("watch")
        await asyncio.sleep(0.01)
        assert order == ["watch", "store"]
        await stream.aclose()
        await feed.stop()
        await publisher.stop()

    asyncio.run(run())


def test_the_shared_hash_is_written_beside_the_next_batch_newest_signal_last() -> None:
    class SlowCache:
        def __init__(self) -> None:
            self.local: list[int] = []
            self.hash: dict[int, int] = {}
            self.writes: list[list[int]] = []
            self.gate = asyncio.Event()

        def put_local(self, signals: list[Signal]) -> None:
            self.local += [s.window_version for s in signals]

        async def put(self, signals: list[Signal]) -> None:
            self.writes.append([s.window_version for s in signals])
            await self.gate.wait()  # Redis slow: the pipeline goes on meanwhile
            self.hash.update((s.stock_id, s.window_version) for s in signals)

    async def run() -> None:
        mem, cache = WindowMemory(2), SlowCache()
        pipeline = Pipeline(mem, _Predictor(mem), cache, Hub(), max_batch=10, deadline_s=1.0)  # type: ignore[arg-type]
        pipeline.start()
        for version in (1, 2, 3):
            mem.hold(_batch([0], [version]))
            await pipeline.step(mem.take(10))  # returns with the hash write still out
            await asyncio.sleep(0)
        assert cache.local == [1, 2, 3] and cache.writes == [[1]]  # 2 and 3 wait, coalesced
        cache.gate.set()
        await asyncio.sleep(0.01)
        assert cache.writes == [[1], [3]] and cache.hash == {0: 3}
        mem.hold(_batch([1], [1]))
        await pipeline.step(mem.take(10))
        await pipeline.stop()  # what is still unwritten goes before the stop ends
        assert cache.hash == {0: 3, 1: 1}

    asyncio.run(run())


def test_the_shared_hash_is_written_once_a_burst_is_over_or_has_waited_long_enough(
        monkeypatch: pytest.MonkeyPatch) -> None:
    class Cache:
        def __init__(self) -> None:
            self.writes: list[list[int]] = []

        def put_local(self, signals: list[Signal]) -> None:
            pass

        async def put(self, signals: list[Signal]) -> None:
            self.writes.append(sorted(s.stock_id for s in signals))

    async def run() -> None:
        mem, cache = WindowMemory(3), Cache()
        # one stock a batch, one batch out: a burst of windows leaves in several batches
        pipeline = Pipeline(mem, _Predictor(mem), cache, Hub(), max_batch=1, deadline_s=1.0)  # type: ignore[arg-type]
        pipeline.start()
        mem.hold(_batch([0, 1, 2], [1, 1, 1]))
        assert await asyncio.to_thread(wait_until, lambda: mem.current(2) is not None, 5)
        await asyncio.sleep(0.01)
        assert cache.writes == [[0, 1, 2]]  # one write, after the burst's last batch
        monkeypatch.setattr(pipeline_module, "WRITE_WITHIN_S", 0.0)  # a feed that never pauses
        mem.hold(_batch([0, 1], [2, 2]))
        assert await asyncio.to_thread(wait_until, lambda: mem.current(1) is not None, 5)
        await asyncio.sleep(0.01)
        assert cache.writes == [[0, 1, 2], [0], [1]]  # each batch's, as they have waited long enough
        await pipeline.stop()

    asyncio.run(run())


def test_watch_acknowledgements_are_written_beside_the_reads_newest_held_batch_only() -> None:
    from rtvol.services.gateway.watch import _Acks

    class Call:
        def __init__(self) -> None:
            self.acks: list[int] = []
            self.gate = asyncio.Event()

        async def write(self, ack: fpb.WatchAck) -> None:
            self.acks.append(ack.batch)
            await self.gate.wait()  # grpc's completion: the reads go on meanwhile

    async def run() -> None:
        call = Call()
        acks = _Acks(call, opened=0.0)  # type: ignore[arg-type]
        acks.held(1)
        await asyncio.sleep(0)
        acks.held(2)  # held while the first acknowledgement is being written
        acks.held(3)
        await asyncio.sleep(0)
        assert call.acks == [1]
        call.gate.set()
        await asyncio.sleep(0.01)
        assert call.acks == [1, 3]  # 3 covers 2; nothing before it was held
        acks.stop()

    asyncio.run(run())
