"""The two halves of the tick-to-signal pipeline without processes: the feature service's
WindowFeed (one batch per wake-up, snapshot for a new watcher, Ingest held until every watcher
acknowledged, a silent watcher dropped) and the gateway's WindowMemory (newer windows only,
current signals, waiting for a batch)."""

from __future__ import annotations

import asyncio

import numpy as np

from rtvol.features.online import OnlineState
from rtvol.features.spec import N_FEATURES, STEPS
from rtvol.loadtest.ticks import StepTicks
from rtvol.proto.v1 import features_pb2 as fpb
from rtvol.services.feature.watch import WindowFeed
from rtvol.services.gateway.memory import WindowMemory
from rtvol.services.gateway.signal import Signal


def _state(stocks: int, steps: int) -> OnlineState:
    """Every stock has closed ``steps`` steps."""
    from rtvol.ingest_codec import decode

    state, ticks = OnlineState(stocks), StepTicks(stocks)
    for _ in range(steps + 1):
        state.apply(decode(ticks.message(list(range(stocks)))))
    return state


def test_a_new_watcher_gets_a_snapshot_then_one_batch_per_wake_up() -> None:
    async def run() -> None:
        state = _state(5, 2)
        feed = WindowFeed(state, max_batch=3)
        w = feed.watch()
        snapshot = [w.queue.get_nowait() for _ in range(2)]  # 5 windows, at most 3 a message
        assert [list(m.stock_ids) for m in snapshot] == [[0, 1, 2], [3, 4]]
        assert all(list(m.version) == [2] * len(m.stock_ids) and not any(m.received_us) for m in snapshot)
        w.ack(snapshot[-1].batch)  # held (a watcher behind by two messages gets no third)
        feed.mark(np.array([4, 1]), received_us=111)
        feed.mark(np.array([1]), received_us=222)  # still pending: the earlier receipt stays
        feed.send()
        (batch,) = [w.queue.get_nowait()]
        assert list(batch.stock_ids) == [1, 4] and list(batch.received_us) == [111, 111]
        assert batch.batch == snapshot[-1].batch + 1
        window = np.frombuffer(batch.windows, "<f4").reshape(-1, STEPS, N_FEATURES)
        np.testing.assert_array_equal(window, state.windows(np.array([1, 4])))
        assert w.queue.empty()
        # a watcher that (re)connects now: its snapshot says which receipt last changed each window
        late = feed.watch()
        received = {sid: r for m in (late.queue.get_nowait() for _ in range(2))
                    for sid, r in zip(m.stock_ids, m.received_us, strict=True)}
        assert received == {0: 0, 1: 222, 2: 0, 3: 0, 4: 111}

    asyncio.run(run())


def test_ingest_waits_for_every_acknowledgement_and_a_silent_watcher_is_dropped() -> None:
    async def run() -> None:
        feed = WindowFeed(_state(3, 1), max_batch=10, ack_timeout_s=0.2)
        prompt, silent = feed.watch(), feed.watch()
        for w in (prompt, silent):
            w.queue.get_nowait()  # the snapshot
            w.ack(w.sent)
        feed.mark(np.array([0]), received_us=1)
        settled = asyncio.ensure_future(feed.settled())
        await asyncio.sleep(0.05)
        assert not settled.done()  # neither acknowledged the new batch yet
        prompt.ack(prompt.sent)
        await asyncio.wait_for(settled, 1.0)  # the silent one is dropped after 0.2 s
        assert feed.watchers == {prompt}
        assert silent.queue.get_nowait() is None  # its stream ends; it reconnects for a snapshot

    asyncio.run(run())


def _batch(ids: list[int], version: list[int], received: int = 5) -> fpb.WindowBatch:
    windows = np.stack([np.full((STEPS, N_FEATURES), v, np.float32) for v in version])
    return fpb.WindowBatch(batch=1, stock_ids=ids, windows=windows.tobytes(), version=version,
                           sequence=version, event_time_us=[0] * len(ids), received_us=[received] * len(ids))


def test_memory_keeps_newer_windows_and_knows_which_signals_are_current() -> None:
    async def run() -> None:
        mem = WindowMemory(4)
        assert mem.hold(_batch([0, 1, 9], [3, 3, 3])) == 2  # 9 is not a known stock
        assert mem.hold(_batch([0], [2])) == 0  # older than the one held
        assert mem.take(10).tolist() == [0, 1] and mem.take(10).tolist() == []
        assert mem.read(np.array([1])).windows[0, 0, 0] == 3.0
        assert mem.holds(0) and not mem.holds(2) and mem.current(0) is None
        mem.settle([Signal(0, rv=1.0, window_version=3)])
        assert mem.current(0) is not None
        mem.hold(_batch([0], [4]))  # a newer window: the signal is no longer current
        assert mem.current(0) is None and mem.dirty[0]
        waiter = asyncio.ensure_future(mem.wait_current([0], 1.0))
        await asyncio.sleep(0)
        mem.settle([Signal(0, rv=2.0, window_version=3)])  # an older computation: still waiting
        await asyncio.sleep(0)
        assert not waiter.done()
        mem.settle([Signal(0, rv=3.0, window_version=4)])
        await asyncio.wait_for(waiter, 1.0)
        assert mem.current(0).rv == 3.0  # type: ignore[union-attr]
        await mem.wait_current([1], 0.01)  # bounded: returns without a signal

    asyncio.run(run())


def test_fallback_signals_are_taken_again_so_tier_1_resumes_without_new_windows() -> None:
    mem = WindowMemory(4)
    mem.hold(_batch([0, 1, 2], [3, 3, 3]))
    mem.release(mem.take(10))
    mem.settle([Signal(0, rv=1.0, tier=1, window_version=3), Signal(1, rv=1.0, tier=2, window_version=3),
                Signal(2, rv=1.0, tier=2, window_version=3)])
    out = mem.take(10) if mem.redo(1) == 1 else None
    assert out is not None and out.tolist() == [1]  # bounded by the limit
    assert mem.redo(10) == 1 and mem.take(10).tolist() == [2]  # 1 is in a batch out: not twice
    mem.release(out)
    assert mem.redo(10) == 1 and mem.take(10).tolist() == [1]  # tier 1's stays as it is
    mem.settle([Signal(1, rv=1.0, tier=1, window_version=3), Signal(2, rv=1.0, tier=1, window_version=3)])
    assert mem.redo(10) == 0


def test_workers_hold_their_shard_and_know_every_held_version_through_shared_arrays() -> None:
    async def run() -> None:
        version, valid_until = np.zeros(4, np.int64), np.zeros(4)  # what the signal table shares
        even, odd = np.array([True, False, True, False]), np.array([False, True, False, True])
        a = WindowMemory(4, mine=even, shared=(version, valid_until))
        b = WindowMemory(4, mine=odd, shared=(version, valid_until))
        assert a.hold(_batch([0, 1, 2, 3], [1, 1, 1, 1])) == 2  # a feed that sent every shard: its own kept
        assert b.hold(_batch([1, 3], [2, 2])) == 2
        assert version.tolist() == [1, 2, 1, 2] and a.take(10).tolist() == [0, 2]
        assert b.take(10).tolist() == [1, 3]
        valid_until[:] = np.inf  # each worker's Watch grants its own stocks' lease
        assert a.holds(1) and a.current(1) is None  # b's window: a knows a signal of version 2 is due
        a.settle([Signal(1, rv=1.0, window_version=1)])  # an older one mirrored: not current
        assert a.current(1) is None
        a.settle([Signal(1, rv=2.0, window_version=2)])
        assert a.current(1) is not None
        b.settle([Signal(sid, 0.1, None, None, "m", "1", 2, window_version=2) for sid in (1, 3)])
        b.release(np.array([1, 3]))
        assert b.redo(10) == 2 and b.take(10).tolist() == [1, 3]  # fallback signals of its shard only
        # b restarts: what it held went with it (others read the store for its stocks meanwhile)
        WindowMemory(4, mine=odd, shared=(version, valid_until))
        assert version.tolist() == [1, 0, 1, 0] and not a.holds(1) and a.holds(0)

    asyncio.run(run())


def test_a_watcher_of_one_shard_gets_and_acknowledges_only_its_stocks() -> None:
    async def run() -> None:
        feed = WindowFeed(_state(6, 1), max_batch=10, ack_timeout_s=5.0)
        every, odd = feed.watch(), feed.watch(shard=(1, 2))
        assert list(every.queue.get_nowait().stock_ids) == [0, 1, 2, 3, 4, 5]
        assert list(odd.queue.get_nowait().stock_ids) == [1, 3, 5]  # its snapshot
        for w in (every, odd):
            w.ack(w.sent)
        feed.mark(np.array([0, 2]), received_us=1)  # nothing of the odd shard
        feed.send()
        assert list(every.queue.get_nowait().stock_ids) == [0, 2] and odd.queue.empty()
        settled = asyncio.ensure_future(feed.settled())
        await asyncio.sleep(0.01)
        assert not settled.done()
        every.ack(every.sent)
        await asyncio.wait_for(settled, 1.0)  # the odd watcher had nothing to acknowledge
        feed.mark(np.array([3, 4]), received_us=2)
        feed.send()
        assert list(odd.queue.get_nowait().stock_ids) == [3]
        assert list(every.queue.get_nowait().stock_ids) == [3, 4]

    asyncio.run(run())


def test_the_watch_stream_bench_sends_each_window_once_whatever_the_workers() -> None:
    from rtvol.loadtest.bench.watch_stream import run

    one, four = run(64, 1, 10, 4), run(64, 4, 10, 4)
    # four shards: the same windows in four messages a round, not four times the bytes
    assert 0 < four["kbytes"] < 1.3 * one["kbytes"]
    assert all(v >= 0 for v in (*one.values(), *four.values()))


def test_a_watcher_behind_gets_the_windows_that_waited_in_one_message() -> None:
    """Past ``inflight`` unacknowledged messages a watcher's windows wait, each its newest
    version, and go in one message with its next acknowledgement (rebuilt exactly from rows);
    the end of an Ingest call sends at once; a watcher stalled past the ack timeout is dropped."""
    from rtvol.ingest_codec import decode

    async def run() -> None:
        state, ticks = OnlineState(4), StepTicks(4)
        feed = WindowFeed(state, max_batch=10, ack_timeout_s=0.2, inflight=2)

        def close_step(ids: list[int]) -> None:
            before = state.closed.copy()
            state.apply(decode(ticks.message(ids)))
            feed.mark(np.flatnonzero(state.closed != before), received_us=1)
            feed.send()

        close_step([0, 1, 2, 3])
        close_step([0, 1, 2, 3])  # each stock's first step closed
        w, memory = feed.watch(rows=True), WindowMemory(4)
        snapshot = w.queue.get_nowait()
        memory.hold(snapshot)
        w.ack(snapshot.batch)
        close_step([0, 1])
        close_step([2])  # two messages out, none acknowledged
        close_step([0])
        close_step([0])  # stock 0 waits, two steps newer than what was sent
        queued = [w.queue.get_nowait() for _ in range(w.queue.qsize())]
        assert [list(m.stock_ids) for m in queued] == [[0, 1], [2]]
        for m in queued:
            memory.hold(m)
        w.ack(queued[-1].batch)
        feed.send()  # what the acknowledgement wakes
        (coalesced,) = [w.queue.get_nowait()]
        assert list(coalesced.stock_ids) == [0] and list(coalesced.rows) == [2]
        memory.hold(coalesced)
        w.ack(coalesced.batch)
        np.testing.assert_array_equal(memory.windows[:4], state.windows(np.arange(4)))
        assert (memory.version[:4] == state.closed).all()
        close_step([1])
        close_step([2])
        close_step([3])  # behind again: stock 3 waits ...
        assert w.queue.qsize() == 2 and feed.pending[3]
        feed.send(every=True)  # ... unless an Ingest call ends
        assert w.queue.qsize() == 3 and not feed.pending.any()
        await asyncio.sleep(0.25)  # nothing acknowledged for longer than the ack timeout
        close_step([0])
        assert w not in feed.watchers and w.ended  # it reconnects for a snapshot

    asyncio.run(run())
