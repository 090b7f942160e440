"""The gateway workers' shared signal table and its mirror (services/gateway/signaltable.py,
shards.py): what one worker writes, another reads back whole, into memory and to Subscribe."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import numpy as np
import pytest

from rtvol.services.gateway.cache import SignalCache
from rtvol.services.gateway.hub import Hub
from rtvol.services.gateway.memory import WindowMemory
from rtvol.services.gateway.shards import Layout, Shards, new_wake_fds
from rtvol.services.gateway.signal import Signal
from rtvol.services.gateway.signaltable import SignalTable, create

STOCKS = 6


@pytest.fixture
def fds() -> Iterator[tuple[int, tuple[int, ...]]]:
    table, wakes = create(STOCKS), new_wake_fds(2)
    yield table, wakes
    for fd in (table, *wakes):
        os.close(fd)


def _signal(sid: int, window_version: int, tier: int = 1) -> Signal:
    return Signal(sid, 0.01 * sid, (0.2, 0.3, 0.5), -0.1, "rtvol_cnn", "3", tier, 11, 12,
                  window_version=window_version, received_us=13, window_end_step=14)


def test_a_signal_reads_back_whole_and_unwritten_slots_are_left_out(fds: tuple[int, tuple[int, ...]]) -> None:
    writer, reader = SignalTable(fds[0], STOCKS), SignalTable(fds[0], STOCKS)  # two mappings, one table
    tier3 = Signal(4, 0.02, None, None, "volatility_estimate", "", 3, 5, 6, window_version=2)
    failed = Signal(5, error="stock 5: the model's output was not finite")
    writer.write([_signal(1, 7), tier3, failed])
    words, signals = reader.read(np.arange(STOCKS))
    assert [s.stock_id for s in signals] == [1, 4, 5] and words.tolist() == [2, 2, 2]
    assert signals == [_signal(1, 7), tier3, failed]
    writer.write([_signal(1, 8)])
    assert reader.read(np.array([1]))[1] == [_signal(1, 8)] and reader.words[1] == 4
    writer.close()
    reader.close()


def test_a_slot_left_half_written_is_skipped_until_its_writer_writes_it_again(
        fds: tuple[int, tuple[int, ...]]) -> None:
    table = SignalTable(fds[0], STOCKS)
    table.write([_signal(2, 1)])
    table.words[2] += 1  # a writer killed between its two word writes
    assert table.read(np.array([2]))[1] == []
    table.write([_signal(2, 2)])  # its restarted successor
    assert table.words[2] % 2 == 0 and table.read(np.array([2]))[1] == [_signal(2, 2)]
    table.close()


def test_the_layout_travels_in_one_variable_and_shards_split_by_stock_id() -> None:
    layout = Layout(1, 3, 7, (8, 9, 10))
    assert Layout.decode(layout.encode()) == layout
    assert np.flatnonzero(layout.mine(7)).tolist() == [1, 4]
    with pytest.raises(SystemExit, match="RTVOL_GATEWAY_SHARDS"):
        Layout.decode("3/2:7:8,9")


def test_a_worker_mirrors_the_other_shard_into_memory_and_pushes_it(fds: tuple[int, tuple[int, ...]]) -> None:
    async def run() -> None:
        table_fd, wakes = fds
        sides = []
        for index in (0, 1):
            layout = Layout(index, 2, table_fd, wakes)
            memory, hub = WindowMemory(STOCKS, mine=layout.mine(STOCKS)), Hub()
            cache = SignalCache(64)
            sides.append(Shards(layout, SignalTable(table_fd, STOCKS), memory, hub, cache))
        even, odd = sides
        even.publish([_signal(0, 3)])  # before the other starts: it warms from the table
        odd.start()
        assert odd.memory.signals[0] == _signal(0, 3)
        sub = odd.hub.subscribe(None)
        even.publish([_signal(2, 1), _signal(4, 1)])
        pushed = await asyncio.wait_for(sub.take(), 5)  # woken through its eventfd
        assert pushed == [_signal(2, 1), _signal(4, 1)]
        assert odd.memory.signals[2] == _signal(2, 1) and odd.memory.signals[1] is None
        assert odd.cache.get(2) == _signal(2, 1)  # GET /v1/signals/2 on this worker: no Redis read
        odd.publish([_signal(1, 5)])  # its own shard: not mirrored back into itself
        assert odd.mirror() == 0 and even.mirror() == 1 and even.memory.signals[1] == _signal(1, 5)
        odd.stop()
        for side in sides:
            side.table.close()

    asyncio.run(run())



def test_a_worker_without_subscribers_copies_another_shards_signal_only_when_asked(
        fds: tuple[int, tuple[int, ...]]) -> None:
    async def run() -> None:
        table_fd, wakes = fds
        even, odd = (Shards(Layout(i, 2, table_fd, wakes), SignalTable(table_fd, STOCKS),
                            WindowMemory(STOCKS, mine=Layout(i, 2, table_fd, wakes).mine(STOCKS)), Hub(),
                            SignalCache(64)) for i in (0, 1))
        odd.start()
        odd.memory.version[2] = 1  # the owner holds window 1 of stock 2 (the shared array, in workers)
        waiting = asyncio.ensure_future(odd.memory.wait_current([2], 5.0))
        await asyncio.sleep(0.01)
        even.publish([_signal(2, 1), _signal(4, 1)])
        await asyncio.wait_for(waiting, 5)  # woken through its eventfd, the waiter looked again
        assert odd.memory.signals[4] is None  # not copied: nobody asked for it
        assert odd.memory.current(2) == _signal(2, 1)  # pulled for the waiter
        assert await odd.cache.get_remote(4) == _signal(4, 1)  # GET /v1/signals/4: pulled, no Redis
        even.publish([_signal(4, 2)])
        assert await odd.cache.get_remote(4) == _signal(4, 2)  # the newest, not the copy held
        sub = odd.hub.subscribe(None)
        even.publish([_signal(2, 3)])
        odd.pull(2)  # a Predict before the wake-up: its Subscribe client still gets the signal
        assert await asyncio.wait_for(sub.take(), 5) == [_signal(2, 3)]
        odd.stop()
        for side in (even, odd):
            side.table.close()

    asyncio.run(run())
