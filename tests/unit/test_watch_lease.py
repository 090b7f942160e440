"""The Watch lease without processes (read-your-writes when a watcher is dropped): what each
message grants, heartbeats on an idle stream, Ingest held until a dropped watcher's lease ran
out, the gateway's lease arithmetic and its memory refusing to answer past the lease."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError
from test_pipeline_units import _batch, _state

from rtvol.proto.v1 import features_pb2 as fpb
from rtvol.services.feature.settings import FeatureSettings
from rtvol.services.feature.watch import WindowFeed, fence
from rtvol.services.gateway.memory import WindowMemory
from rtvol.services.gateway.watch import _Acks, _LocalCall


class _Acking:
    """The acknowledgements a test sends on a Watch stream, as the gateway's would arrive."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[int] = asyncio.Queue()

    async def __aiter__(self) -> AsyncIterator[fpb.WatchAck]:
        while True:
            yield fpb.WatchAck(batch=await self.queue.get())


def test_fence_is_the_lease_after_the_last_message_and_nothing_for_a_watcher_never_sent_one() -> None:
    assert fence(0.0, 0.5) == 0.0
    assert fence(100.0, 0.5) == 100.5


def test_messages_echo_the_acknowledgement_and_an_idle_stream_gets_heartbeats() -> None:
    async def run() -> None:
        feed = WindowFeed(_state(3, 1), max_batch=10, ack_timeout_s=0.4)  # lease 0.2 s
        acks = _Acking()
        stream = feed.stream(acks).__aiter__()
        snapshot = await stream.__anext__()
        assert list(snapshot.stock_ids) == [0, 1, 2] and snapshot.acked == 0
        assert snapshot.lease_us == 200_000
        acks.queue.put_nowait(snapshot.batch)
        began = time.monotonic()
        beat = await asyncio.wait_for(stream.__anext__(), 1.0)  # nothing to send: a heartbeat
        assert 0.04 <= time.monotonic() - began < 0.2  # a quarter lease
        assert not beat.stock_ids and beat.batch > snapshot.batch and beat.acked == snapshot.batch
        acks.queue.put_nowait(beat.batch)
        feed.mark(np.array([1]), received_us=7)
        feed.send()
        batch = await asyncio.wait_for(stream.__anext__(), 1.0)
        assert list(batch.stock_ids) == [1] and batch.batch > beat.batch and batch.acked == beat.batch
        await stream.aclose()

    asyncio.run(run())


def test_ingest_ends_only_after_a_dropped_watchers_lease_ran_out() -> None:
    async def run() -> None:
        feed = WindowFeed(_state(3, 1), max_batch=10, ack_timeout_s=0.3, lease_s=0.2)
        received: list[float] = []

        async def read_never_acknowledge() -> None:  # a gateway whose acknowledgements stall
            async for _ in feed.stream(_Acking()):
                received.append(time.monotonic())

        reader = asyncio.create_task(read_never_acknowledge())
        await asyncio.sleep(0.1)  # the snapshot, then heartbeats every 0.05 s
        feed.mark(np.array([0]), received_us=1)
        began = time.monotonic()
        await asyncio.wait_for(feed.settled(), 2.0)
        ended = time.monotonic()
        await asyncio.wait_for(reader, 1.0)  # its stream ended
        assert not feed.watchers and len(received) >= 3  # dropped after the ack timeout
        # the last message it got (up to the drop, a heartbeat every 0.05 s) granted a lease
        # that Ingest waited out, beyond the ack timeout
        assert ended >= received[-1] + 0.2
        assert 0.3 + 0.2 - 0.06 <= ended - began < 0.3 + 0.2 + 0.2  # bounded (+ a busy machine)
        began = time.monotonic()
        await feed.settled()  # later Ingest calls wait no more once the fence is past
        assert time.monotonic() - began < 0.05

    asyncio.run(run())


def test_a_watcher_that_disconnects_fences_ingest_for_its_lease() -> None:
    async def run() -> None:
        feed = WindowFeed(_state(2, 1), max_batch=10, ack_timeout_s=1.0, lease_s=0.3)
        stream = feed.stream(_Acking()).__aiter__()
        await stream.__anext__()
        sent = time.monotonic()
        await stream.aclose()  # the stream ends: nobody knows whether its gateway noticed
        await feed.settled()
        assert time.monotonic() >= sent + 0.3 - 0.01

    asyncio.run(run())


def test_the_lease_must_be_below_the_ack_timeout() -> None:
    assert FeatureSettings(watch_ack_timeout_s=2.0).lease_s == 1.0  # 0: half of it
    assert FeatureSettings(watch_ack_timeout_s=2.0, watch_lease_s=0.5).lease_s == 0.5
    for lease in (2.0, 3.0, -0.1):
        with pytest.raises(ValidationError, match="watch_lease_s"):
            FeatureSettings(watch_ack_timeout_s=2.0, watch_lease_s=lease)
    with pytest.raises(ValueError, match="lease_s"):
        WindowFeed(_state(1, 1), max_batch=1, ack_timeout_s=1.0, lease_s=1.0)


class _Call:
    """Where _Acks writes: kept, so the test sees what was acknowledged."""

    def __init__(self) -> None:
        self.written: list[int] = []

    async def write(self, ack: fpb.WatchAck) -> None:
        self.written.append(ack.batch)


def test_the_gateway_counts_its_lease_from_sending_the_echoed_acknowledgement() -> None:
    async def run() -> None:
        call = _Call()
        acks = _Acks(call, opened=100.0)  # type: ignore[arg-type]
        assert acks.lease_end(0, 500_000) == 100.5  # nothing echoed yet: from the stream's opening
        assert acks.lease_end(0, 0) == math.inf  # a feature service older than leases
        acks.held(3)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert call.written == [3]
        (batch, sent), = acks.unechoed
        assert batch == 3 and sent > 100.0
        assert acks.lease_end(2, 500_000) == 100.5  # an echo older than the write: no renewal
        assert acks.lease_end(3, 500_000) == pytest.approx(sent + 0.5)
        assert acks.lease_end(3, 500_000) == pytest.approx(sent + 0.5)  # kept until a newer echo
        acks.stop()

    asyncio.run(run())


def test_held_windows_answer_only_while_the_lease_runs() -> None:
    mem = WindowMemory(3)
    mem.hold(_batch([0, 1, 2], [1, 1, 1]))
    assert all(mem.holds(s) for s in range(3))  # no Watch stream: always (embedded, tests)
    mem.valid_until[:] = [time.monotonic() + 60, time.monotonic() - 1, 0.0]
    before = REGISTRY.get_sample_value("rtvol_gateway_memory_lease_lapsed_total") or 0.0
    assert [mem.holds(s) for s in range(3)] == [True, False, False]
    after = REGISTRY.get_sample_value("rtvol_gateway_memory_lease_lapsed_total") or 0.0
    assert after == before + 1  # the lapsed lease, not the stream that is down


def test_a_watch_in_process_acknowledges_through_the_feed_and_leaves_it_when_cancelled() -> None:
    """rtvol serve embedded: the gateway's in-process call gets the feed's own messages, its
    acknowledgements release a waiting Ingest, and cancelling it takes the watcher off the feed
    (no Ingest waits for it)."""
    async def run() -> None:
        feed = WindowFeed(_state(3, 1), max_batch=10, ack_timeout_s=2.0)
        call = _LocalCall(feed.stream, True, (0, 1))
        snapshot = await asyncio.wait_for(call.read(), 1.0)
        assert list(snapshot.stock_ids) == [0, 1, 2] and len(feed.watchers) == 1
        await call.write(fpb.WatchAck(batch=snapshot.batch))
        feed.mark(np.array([1]), received_us=7)
        settled = asyncio.ensure_future(feed.settled())  # Ingest's wait: for this watcher's ack
        batch = await asyncio.wait_for(call.read(), 1.0)
        assert list(batch.stock_ids) == [1] and batch.acked == snapshot.batch
        await asyncio.sleep(0.05)
        assert not settled.done()
        await call.write(fpb.WatchAck(batch=batch.batch))
        await asyncio.wait_for(settled, 1.0)
        call.cancel()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert not feed.watchers

    asyncio.run(run())
