"""The gateway follows one Watch stream per feature replica: a replica that listens counts as
followed even before it has a window to push, one that does not is waited for at start only
up to a bound, and /readyz says how many are followed; --feature-url refuses an empty replica."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from pydantic import ValidationError

from rtvol.localproc import free_port
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
