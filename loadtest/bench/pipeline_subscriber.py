"""`rtvol bench pipeline`'s Subscribe client: every pushed signal timed on arrival, read from
SubscribeColumns or SubscribeBatches into the same rows (one a signal: arrived, stock, window
version, receipt, tier, µs from receipt to the gateway's write, then the pipeline's hops)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from rtvol.pipeline_hops import HOPS, NO_HOPS

ROW = 6 + len(HOPS)  # the subscriber's numbers a signal


def signal_rows(signals: Any, now: int) -> np.ndarray:
    """The subscriber's rows of Signal messages that arrived at ``now``."""
    return np.array([(now, sig.stock_id, sig.window_version, sig.received_us, sig.tier,
                      int(sig.feature_age_ms * 1000), *(sig.hops_us or NO_HOPS)) for sig in signals],
                    np.int64).reshape(-1, ROW)


def batch_rows(batch: Any, now: int) -> np.ndarray:
    """The subscriber's rows of a SignalBatch that arrived at ``now``."""
    return signal_rows(batch.signals, now)


def columns_rows(msg: Any, now: int) -> np.ndarray:
    """The subscriber's rows of a SignalColumns that arrived at ``now``."""
    n = len(msg.stock_id)
    rows = np.zeros((n, ROW), np.int64)
    rows[:, 0] = now
    for col, field in enumerate(("stock_id", "window_version", "received_us", "tier"), start=1):
        rows[:, col] = getattr(msg, field)
    rows[:, 5] = np.asarray(msg.feature_age_ms) * 1000
    if len(msg.hops_us):
        rows[:, 6:] = np.asarray(msg.hops_us, np.int64).reshape(n, len(HOPS))
    return np.concatenate([rows, signal_rows(msg.others, now)]) if len(msg.others) else rows


class Subscriber:
    """Every pushed signal, timed on arrival (a thread of this process), from SubscribeColumns
    (``columns``: each message's columns read as arrays, as a trading engine would) or
    SubscribeBatches (``batches``: one Signal message per signal)."""

    def __init__(self, target: str, fmt: str = "columns") -> None:
        import grpc

        from rtvol.proto.v1 import signals_pb2 as pb
        from rtvol.proto.v1 import signals_pb2_grpc as pb_grpc

        self.channel = grpc.insecure_channel(target)
        request = pb.SubscribeRequest(all=True, hops=True)
        stub = pb_grpc.SignalsStub(self.channel)
        self.stream = stub.SubscribeColumns(request) if fmt == "columns" else stub.SubscribeBatches(request)
        self.decode = columns_rows if fmt == "columns" else batch_rows
        self.ended = ""  # how the stream ended before it was cancelled (an error), if it did
        # per signal: arrived, stock, version, received, tier, µs from receipt to the gateway's
        # write, then the pipeline's hops (rtvol/pipeline_hops.py; zeros for a signal without them)
        self.blocks: list[np.ndarray] = []
        self._lock = threading.Lock()  # the reader appends while take() swaps the list
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import grpc

        try:
            for msg in self.stream:
                block = self.decode(msg, time.time_ns() // 1000)
                # not self.blocks.append(self.decode(...)): that binds the list before decoding, and
                # a take() meanwhile swaps it out, losing the block (whole bursts of signals)
                with self._lock:
                    self.blocks.append(block)
            self.ended = "ended by the gateway"
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:  # cancelled at the end: expected
                self.ended = f"{e.code().name}: {e.details()}"

    def take(self) -> np.ndarray:
        with self._lock:
            blocks, self.blocks = self.blocks, []
        return np.concatenate(blocks) if blocks else np.zeros((0, ROW), np.int64)

    def take_tiers(self) -> np.ndarray:
        """Arrival (µs), stock and tier of each signal pushed since the last take."""
        return self.take()[:, [0, 1, 4]]

    def close(self) -> None:
        self.stream.cancel()
        self.thread.join(10)
        self.channel.close()


@contextlib.contextmanager
def subscribed(target: str, fmt: str) -> Iterator[Subscriber]:
    """A Subscribe client for one feed, registered before the feed starts."""
    sub = Subscriber(target, fmt)
    try:
        time.sleep(0.3)  # the subscription is registered before the first signal
        yield sub
    finally:
        sub.close()
