"""Run in its own process by tests/unit/test_sidecar_client_gone.py (the pytest process may hold
tritonclient's copy of the inference protos; the gateway's client needs rtvol's): the gateway's
SidecarClient against a sidecar whose every stream fails at its first request and which refuses
shared memory, as a killed sidecar's connections do. Prints one JSON line of what it saw.

    cd tests && python -m helpers.sidecar_gone SHM_DIR CALLS
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np

from rtvol import shm
from rtvol.proto.inference import grpc_service_pb2 as pb
from rtvol.proto.inference import grpc_service_pb2_grpc as pb_grpc
from rtvol.services.gateway.sidecar_client import SHM_MIN_BYTES, SidecarClient
from rtvol.services.gateway.tier1 import UpstreamError


class Gone(pb_grpc.GRPCInferenceServiceServicer):
    async def ModelStreamInfer(self, requests: AsyncIterator[pb.ModelInferRequest],
                               context: grpc.aio.ServicerContext
                               ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        async for _ in requests:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the sidecar is going away")
        yield pb.ModelStreamInferResponse()  # never reached: makes this an async generator

    async def SystemSharedMemoryRegister(self, request: pb.SystemSharedMemoryRegisterRequest,
                                         context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAVAILABLE, "the sidecar is going away")


def feeders() -> int:
    """grpc's tasks feeding a stream's requests that are still pending."""
    return sum(not t.done() and "_consume_request_iterator" in t.get_coro().__qualname__  # type: ignore[union-attr]
               for t in asyncio.all_tasks())


async def main(shm_dir: Path, calls: int) -> dict[str, object]:
    warnings: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: warnings.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("rtvol.services.gateway.sidecar_client").addHandler(handler)
    server = grpc.aio.server()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(Gone(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    client = SidecarClient(f"127.0.0.1:{port}", "m", streams=1, slots=shm.Slots(shm_dir, 4 * SHM_MIN_BYTES))
    big = np.zeros((SHM_MIN_BYTES // (50 * 12 * 4) + 1, 50, 12), np.float32)
    failed = 0
    for _ in range(calls):  # each on a new stream: the last one failed
        try:
            await client.infer(big)
        except UpstreamError:
            failed += 1
    for _ in range(20):  # the streams' ends reach their feeding tasks
        await asyncio.sleep(0.01)
    gc.collect()
    seen = {"failed": failed, "pending_feeders": feeders(),
            "shm_warnings": sum("shared memory not used" in w for w in warnings)}
    await client.close()
    await server.stop(None)
    return seen


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))))
