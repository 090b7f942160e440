"""Ingest messages applied together give what applying them one by one gives: the same
updates in the same order, a malformed message rejected alone, a watermark still judging the
updates after it; and the Ingest stream's batcher groups what arrives together."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest

from rtvol.features.online import OnlineState
from rtvol.features.online_batch import FIELDS, REASONS, R, UpdateBatch
from rtvol.featurestore import InProcessStore
from rtvol.ingest_codec import decode, decode_many
from rtvol.loadtest.ticks import STEP_US, StepTicks
from rtvol.proto.v1 import features_pb2 as pb
from rtvol.services.feature.batching import StreamBatcher, _Stream
from rtvol.services.feature.publisher import Publisher
from rtvol.services.feature.servicer import Ingestor


def _trade(stock: int, seq: int, t_us: int) -> pb.IngestRequest:
    return pb.IngestRequest(columns=pb.UpdateColumns(stock_id=[stock], event_time_us=[t_us], sequence=[seq],
                                                     kind=[1], price=[100.0], size=[5.0], order_count=[2]))


def _update(stock: int, seq: int, t_us: int) -> pb.IngestRequest:
    return pb.IngestRequest(updates=[pb.MarketUpdate(
        stock_id=stock, event_time_us=t_us, sequence=seq,
        book=pb.BookSnapshot(bid_price1=99.9, ask_price1=100.1, bid_price2=99.8, ask_price2=100.2,
                             bid_size1=1, ask_size1=2, bid_size2=3, ask_size2=4))])


def _same(a: object, b: object) -> None:
    for f in FIELDS:
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)


def _mixed() -> list[pb.IngestRequest]:
    ticks = StepTicks(6)
    return [ticks.message([0, 1]), _trade(2, 7, 5), ticks.message([3]), _update(4, 1, 9), ticks.message([0])]


@pytest.mark.parametrize("requests", [
    _mixed(),  # book and trade columns, and a MarketUpdate message: gathered in order
    [StepTicks(6).message([i]) for i in range(6)],  # one kind of columns: merged by protobuf
])
def test_decode_many_equals_decoding_each_message_in_order(requests: list[pb.IngestRequest]) -> None:
    batch, malformed = decode_many(requests)
    assert malformed == []
    one_by_one = [decode(r) for r in requests]
    _same(batch, UpdateBatch.from_columns({f: np.concatenate([getattr(b, f) for b in one_by_one])
                                           for f in FIELDS}))


def test_a_malformed_message_is_rejected_alone() -> None:
    ticks = StepTicks(4)
    bad = pb.IngestRequest(columns=pb.UpdateColumns(stock_id=[1, 2], event_time_us=[1], sequence=[1, 2],
                                                    kind=[0, 0]))
    requests = [ticks.message([0]), bad, ticks.message([3])]
    batch, malformed = decode_many(requests)
    assert malformed == [1]
    assert batch.stock_id.tolist() == [0, 3]


def _ingestor(stocks: int = 8) -> Ingestor:
    state = OnlineState(stocks)
    return Ingestor(state, Publisher(state, InProcessStore("x"), 0.0), 1000)


def test_applied_together_or_one_by_one_the_state_and_counts_agree() -> None:
    requests = [*_mixed(), _trade(2, 7, 6)]  # a duplicate sequence: rejected either way
    one, many = _ingestor(), _ingestor()
    counts_one = sum(one.apply(r) for r in requests)
    counts_many = many.apply_many(requests, 0)
    assert counts_many.tolist() == counts_one.tolist() and counts_many[R["duplicate_sequence"]] == 1
    for name in ("closed", "seq", "step", "ring", "acc"):
        np.testing.assert_array_equal(getattr(one.state, name), getattr(many.state, name), err_msg=name)


async def _stream(requests: list[pb.IngestRequest], gap_s: float = 0.0) -> AsyncIterator[pb.IngestRequest]:
    for r in requests:
        if gap_s:
            await asyncio.sleep(gap_s)
        yield r


def test_the_batcher_applies_what_arrives_together_and_cuts_at_a_watermark() -> None:
    calls: list[list[pb.IngestRequest]] = []

    def apply(batch: list[pb.IngestRequest], received_us: int) -> np.ndarray:
        assert received_us > 0
        calls.append(batch)
        return np.ones(len(REASONS), np.int64) * len(batch)

    ticks = StepTicks(4)
    burst = [ticks.message([i % 4]) for i in range(10)]
    burst[5].watermark_us = 3 * STEP_US
    counts, messages = asyncio.run(StreamBatcher(apply).consume(_stream(burst)))
    assert messages == 10 and counts.tolist() == [10] * len(REASONS)
    assert [len(c) for c in calls] == [6, 4]  # the watermark's message ends the first batch
    calls.clear()
    spaced = [ticks.message([0]) for _ in range(3)]
    asyncio.run(StreamBatcher(apply, quiet_s=1e-4).consume(_stream(spaced, gap_s=0.01)))
    assert [len(c) for c in calls] == [1, 1, 1]  # a quiet stream: no message waits for another


def test_the_batcher_passes_on_the_clients_error_after_applying_what_came() -> None:
    applied: list[int] = []

    async def failing() -> AsyncIterator[pb.IngestRequest]:
        yield StepTicks(2).message([0])
        raise ConnectionResetError("client went away")

    def apply(batch: list[pb.IngestRequest], received_us: int) -> np.ndarray:
        applied.append(len(batch))
        return np.zeros(len(REASONS), np.int64)

    with pytest.raises(ConnectionResetError):
        asyncio.run(StreamBatcher(apply).consume(failing()))
    assert applied == [1]


def test_a_run_waits_longer_when_applying_is_slow_so_applying_stays_a_quarter_of_the_time() -> None:
    batcher = StreamBatcher(lambda batch, received_us: np.zeros(len(REASONS), np.int64))
    stream = _Stream(batcher.apply, batcher.max_messages)
    assert batcher._wait_s(stream) == batcher.max_wait_s  # nothing applied yet: the shortest wait
    stream.apply_s = 1e-4  # a cheap apply: a run still waits only max_wait_s
    assert batcher._wait_s(stream) == batcher.max_wait_s
    stream.apply_s = 1e-3  # three times as long reading as applying
    assert batcher._wait_s(stream) == pytest.approx(3e-3)
    stream.apply_s = 1.0  # never longer than max_hold_s
    assert batcher._wait_s(stream) == batcher.max_hold_s


def test_a_flush_records_how_long_its_apply_took() -> None:
    def slow(batch: list[pb.IngestRequest], received_us: int) -> np.ndarray:
        time.sleep(0.002)
        return np.zeros(len(REASONS), np.int64)

    stream = _Stream(slow, 16)
    stream.flush()  # nothing pending: not an apply
    assert stream.apply_s == 0.0
    stream.add(StepTicks(2).message([0]))
    stream.flush()
    assert stream.apply_s >= 0.002 and stream.messages == 1
