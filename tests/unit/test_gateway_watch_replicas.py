"""The gateway follows one Watch stream per feature replica: a replica that listens counts as
followed even before it has a window to push, one that does not is waited for at start only
up to a bound, and /readyz says how many are followed; the windows a replica pushed answer
Predict only while its stream is open (then the store does); --feature-url refuses an empty
replica."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest
from pydantic import ValidationError

from rtvol.features.spec import N_FEATURES, STEPS
from rtvol.localproc import free_port, wait_until
from rtvol.proto.v1 import features_pb2 as fpb
from rtvol.proto.v1 import features_pb2_grpc as fpb_grpc
from rtvol.services.gateway.memory import WindowMemory
from rtvol.services.gateway.readiness import Readiness
from rtvol.services.gateway.settings import GatewaySettings
from rtvol.services.gateway.watch import follow_all, wait_connected


class Quiet(fpb_grpc.FeaturesServicer):
    """A replica with no window yet: its Watch stream stays open and pushes nothing."""

    async def Watch(self, request_iterator: AsyncIterator[fpb.WatchAck],
                    context: grpc.aio.ServicerContext) -> AsyncIterator[fpb.WindowBatch]:
        await asyncio.Event().wait()
        yield fpb.WindowBatch()  # never reached: makes this an async generator


class OneWindow(fpb_grpc.FeaturesServicer):
    """A replica that pushes one window of stock ``sid`` and then nothing."""

    def __init__(self, sid: int) -> None:
        self.sid = sid

    async def Watch(self, request_iterator: AsyncIterator[fpb.WatchAck],
                    context: grpc.aio.ServicerContext) -> AsyncIterator[fpb.WindowBatch]:
        yield fpb.WindowBatch(batch=1, stock_ids=[self.sid], version=[1], sequence=[1], event_time_us=[1],
                              received_us=[1], end_step=[1],
                              windows=np.zeros((1, STEPS, N_FEATURES), "<f4").tobytes())
        await asyncio.Event().wait()


def test_a_replicas_windows_answer_only_while_its_stream_is_open() -> None:
    async def run() -> tuple[bool, bool, bool]:
        servers = []
        for sid in (0, 1):  # replica i owns stock i of 2
            server = grpc.aio.server()
            fpb_grpc.add_FeaturesServicer_to_server(OneWindow(sid), server)
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            servers.append((server, f"127.0.0.1:{port}"))
        memory = WindowMemory(4)
        watches = follow_all([url for _, url in servers], memory)
        try:
            for w in watches:
                w.start()
            both = await asyncio.to_thread(wait_until, lambda: memory.holds(0) and memory.holds(1), 5)
            await servers[1][0].stop(0)  # replica 1 goes away: its stream ends
            gone = await asyncio.to_thread(wait_until, lambda: not memory.holds(1), 5)
            return both, gone, memory.holds(0)
        finally:
            for w in watches:
                await w.stop()
            await servers[0][0].stop(0)

    both, gone, other = asyncio.run(run())
    assert both and gone and other  # the other replica's stock still answers from memory


def test_a_listening_replica_is_followed_a_missing_one_waited_for_up_to_a_bound() -> None:
    async def run() -> tuple[bool, dict[str, object], bool, dict[str, object]]:
        server = grpc.aio.server()
        fpb_grpc.add_FeaturesServicer_to_server(Quiet(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        watches = follow_all([f"127.0.0.1:{port}", f"127.0.0.1:{free_port()}"], WindowMemory(8))
        readiness = Readiness(None, watches)
        readiness.started()
        try:
            for w in watches:
                w.start()
            both = await wait_connected(watches, 1.0)
            one = readiness.state()
            first = await wait_connected(watches[:1], 5.0)
            return both, one, first, readiness.state()
        finally:
            for w in watches:
                await w.stop()
            await server.stop(0)

    both, early, first, later = asyncio.run(run())
    assert not both and first  # the missing replica is given up on after the bound
    assert later["ready"] and later["feature_replicas_followed"] == "1 of 2"
    assert early["ready"]  # readiness after start-up does not wait on a replica


@pytest.mark.parametrize("url", ["a:1,,b:2", "a:1,", ",a:1"])
def test_an_empty_feature_replica_is_refused(url: str) -> None:
    with pytest.raises(ValidationError, match="feature_url"):
        GatewaySettings(feature_url=url)
    assert GatewaySettings(feature_url="a:1, b:2").feature_urls == ["a:1", "b:2"]
