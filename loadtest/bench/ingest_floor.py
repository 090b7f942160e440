"""A bare grpc.aio server whose Ingest only counts the messages of each client stream: the
floor that `rtvol bench pipeline` reports the feature service's single-update Ingest against
(same feeder, same machine, same run). No deserializer, no interceptor, no work per message
but the read itself, so what the feature service spends beyond it is its own. ``--rpc``: the
same count served through rtvol/rpc.py's server (its wrapped handlers, the message decoded), to
measure what that layer adds per message.

    python -m rtvol.loadtest.bench.ingest_floor --port PORT [--rpc]
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator, Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from rtvol.proto.v1 import features_pb2 as pb

SERVICE = pb.DESCRIPTOR.services_by_name["Features"].full_name


async def _count(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
    n = 0
    async for _ in requests:
        n += 1
    return pb.IngestSummary(messages=n).SerializeToString()


async def serve(port: int, through_rpc: bool = False) -> None:
    if through_rpc:
        from rtvol import rpc

        served = rpc.Server([SERVICE], reflect=False)  # its health service reports SERVING below
        served.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            SERVICE, {"Ingest": grpc.stream_unary_rpc_method_handler(_count, pb.IngestRequest.FromString)}),))
        served.listen(f"127.0.0.1:{port}")
        await served.start()
        await served.set_serving(True)
        await served.server.wait_for_termination()
        return
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        SERVICE, {"Ingest": grpc.stream_unary_rpc_method_handler(_count)}),))
    checker = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await checker.set("", health_pb2.HealthCheckResponse.SERVING)
    await server.wait_for_termination()


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--rpc", action="store_true",
                   help="served through rtvol.rpc's server: its wrapped handlers, the messages decoded")
    a = p.parse_args(argv)
    asyncio.run(serve(a.port, a.rpc))


if __name__ == "__main__":
    main()
