"""The reference engine's order path: try-send never blocks, overflow is counted, acks reconcile."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from rtvol.proto.v1 import signals_pb2 as pb

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
import trading_engine as te


def signal(stock: int, up: float, down: float) -> pb.Signal:
    return pb.Signal(stock_id=stock, rv=0.001, direction=pb.Direction(down=down, flat=1 - up - down, up=up))


def test_full_queue_drops_and_counts_then_venue_acknowledges_everything_sent() -> None:
    async def scenario() -> te.Book:
        book, queue = te.Book(), asyncio.Queue[te.Order](maxsize=2)
        results = [te.try_send(queue, book, signal(i, 0.5, 0.2)) for i in range(5)]  # no await: no venue yet
        assert results == [True, True, False, False, False]
        assert not te.try_send(queue, book, pb.Signal(stock_id=9, rv=0.001))  # tier 3: nothing to size
        worker = asyncio.create_task(te.venue(queue, book, latency_s=0))
        await asyncio.wait_for(queue.join(), 2)
        worker.cancel()
        return book

    book = asyncio.run(scenario())
    assert (book.next_id, book.acked, book.overflow, book.sent) == (2, 2, 3, {})


def test_kelly_sizing_is_capped_and_signed() -> None:
    book, queue = te.Book(), asyncio.Queue[te.Order](maxsize=4)
    te.try_send(queue, book, signal(1, 0.3, 0.2))
    te.try_send(queue, book, signal(2, 0.0, 0.9))
    sizes = [queue.get_nowait().fraction for _ in range(2)]
    assert sizes == pytest.approx([0.1, -0.25])
