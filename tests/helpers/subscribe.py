"""A Subscribe stream read on a thread while a test does other things."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import grpc

from rtvol.proto.v1 import signals_pb2 as pb
from rtvol.proto.v1 import signals_pb2_grpc as pb_grpc


@contextlib.contextmanager
def collecting(channel: grpc.Channel, stock_ids: list[int], timeout_s: float = 60
               ) -> Iterator[list[pb.Signal]]:
    """Yields the list the signals pushed for ``stock_ids`` are appended to, once the
    subscription is registered (before the changes it should see); cancelled at the end."""
    pushed: list[pb.Signal] = []
    subscription = pb_grpc.SignalsStub(channel).Subscribe(pb.SubscribeRequest(stock_ids=stock_ids),
                                                          timeout=timeout_s)

    def collect() -> None:
        with contextlib.suppress(grpc.RpcError):  # cancelled below
            pushed.extend(subscription)

    reader = threading.Thread(target=collect, daemon=True)
    reader.start()
    time.sleep(0.3)
    try:
        yield pushed
    finally:
        subscription.cancel()
        reader.join(10)


def arrived_since(pushed: list[pb.Signal], stock_ids: list[int], sent_us: int) -> bool:
    """Whether every one of ``stock_ids`` got a signal for an update received after ``sent_us``."""
    return {s.stock_id for s in list(pushed) if s.received_us >= sent_us} == set(stock_ids)
