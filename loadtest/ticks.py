"""Synthetic book updates as Ingest messages, each closing a 12-s step of its stocks: what
the pipeline benchmark and the read-your-writes test feed (a step closes when a stock's
update lands in a later step, so every update here moves its stock one step on)."""

from __future__ import annotations

import numpy as np

from rtvol.features.spec import STEP_SECONDS
from rtvol.proto.v1 import features_pb2 as pb

STEP_US = STEP_SECONDS * 1_000_000


class StepTicks:
    """Per stock, the next update: one step later than the last, sequence one higher."""

    def __init__(self, stocks: int, seed: int = 0, start: int = 0) -> None:
        """``start``: the first step (and sequence number), later than any a stock has seen."""
        self.step = np.full(stocks, start, np.int64)  # the step each stock's next update lands in
        self.start = start
        self.rng = np.random.default_rng(seed)

    def closed(self, sid: int) -> int:
        """Steps closed once every update made so far is applied (the window's version)."""
        return max(0, int(self.step[sid]) - self.start - 1)

    def message(self, stock_ids: np.ndarray | list[int]) -> pb.IngestRequest:
        """One update per stock (each stock at most once), in one columnar message."""
        ids = np.asarray(stock_ids, np.int64)
        step = self.step[ids]
        self.step[ids] += 1
        n = len(ids)
        mid = 100.0 * np.exp(self.rng.normal(0, 1e-3, n))
        half, size = 0.01, self.rng.integers(1, 100, (4, n)).astype(float)
        return pb.IngestRequest(columns=pb.UpdateColumns(
            stock_id=ids.tolist(), event_time_us=(step * STEP_US + 1).tolist(), sequence=step.tolist(),
            kind=[0] * n, bid_price1=(mid - half).tolist(), ask_price1=(mid + half).tolist(),
            bid_price2=(mid - 2 * half).tolist(), ask_price2=(mid + 2 * half).tolist(),
            bid_size1=size[0].tolist(), ask_size1=size[1].tolist(), bid_size2=size[2].tolist(),
            ask_size2=size[3].tolist()))
