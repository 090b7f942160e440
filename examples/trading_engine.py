"""Reference trading-engine client: pushed signals in, Kelly-sized mock orders out.

The signal loop never blocks on order handling: orders go through a bounded asyncio queue
with try-send (a full queue drops the order and counts it), a separate task "sends" them
to a mock venue, and acknowledgements are reconciled against what was sent.

    python examples/trading_engine.py --target 127.0.0.1:50051 --seconds 30
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from dataclasses import dataclass, field

import grpc

from rtvol.proto.v1 import signals_pb2 as pb
from rtvol.proto.v1 import signals_pb2_grpc as pb_grpc


@dataclass
class Order:
    order_id: int
    stock_id: int
    fraction: float  # of capital; sign is the side


@dataclass
class Book:
    sent: dict[int, Order] = field(default_factory=dict)  # awaiting acknowledgement
    acked: int = 0
    overflow: int = 0
    next_id: int = 0


def try_send(queue: asyncio.Queue[Order], book: Book, sig: pb.Signal, capital_cap: float = 0.25) -> bool:
    """Size by the Kelly fraction and enqueue without waiting; False (counted) when full."""
    if sig.error or not sig.HasField("direction"):
        return False  # tier 3 has no direction: nothing to size
    # pushed signals carry no Kelly field: for an even-money bet Kelly is p(up) - p(down)
    kelly = sig.kelly_fraction if sig.HasField("kelly_fraction") else sig.direction.up - sig.direction.down
    order = Order(book.next_id, sig.stock_id, max(-capital_cap, min(capital_cap, kelly)))
    try:
        queue.put_nowait(order)
    except asyncio.QueueFull:
        book.overflow += 1
        return False
    book.next_id += 1
    book.sent[order.order_id] = order
    return True


async def venue(queue: asyncio.Queue[Order], book: Book, latency_s: float = 0.001) -> None:
    """A mock venue: acknowledges each order after ``latency_s``; reconciles the book."""
    while True:
        order = await queue.get()
        await asyncio.sleep(latency_s)
        if book.sent.pop(order.order_id, None) is not None:
            book.acked += 1
        queue.task_done()


async def run(target: str, seconds: float, queue_size: int = 64) -> Book:
    book, queue = Book(), asyncio.Queue[Order](maxsize=queue_size)
    worker = asyncio.create_task(venue(queue, book))
    async with grpc.aio.insecure_channel(target) as channel:
        stream = pb_grpc.SignalsStub(channel).Subscribe(pb.SubscribeRequest(all=True), timeout=seconds)
        try:
            async for sig in stream:
                try_send(queue, book, sig)
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                raise
    with contextlib.suppress(TimeoutError):  # let the venue acknowledge what is queued, bounded
        await asyncio.wait_for(queue.join(), 2.0)
    worker.cancel()
    return book


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", default="127.0.0.1:50051", help="gateway gRPC HOST:PORT")
    p.add_argument("--seconds", type=float, default=30.0)
    args = p.parse_args()
    book = asyncio.run(run(args.target, args.seconds))
    print(f"orders sent {book.next_id}, acknowledged {book.acked}, outstanding {len(book.sent)}, "
          f"overflow {book.overflow}")


if __name__ == "__main__":
    main()
