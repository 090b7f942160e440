"""KServe-v2 (Open Inference Protocol) echo servers that perf_analyzer can drive: the floor
of each gRPC server shape the sidecar could take, with no model, validation or metrics.

They answer ModelMetadata/ModelConfig/readiness from a repository's config.pbtxt (perf_analyzer
asks before it sends) and every ModelInfer / ModelStreamInfer with one fixed answer of the
model's output shapes. ``--shape`` picks the server:

  aio-pb      grpc.aio, the generated servicer (request parsed, response serialised)
  aio-raw     grpc.aio, a generic handler on raw bytes (no protobuf either way)
  sync-pb     grpc.server on a thread pool, the generated servicer
  sync-raw    grpc.server on a thread pool, raw bytes

``--wrapped`` serves an aio shape through rtvol.rpc.WrappingServer (no API keys), as every rtvol
service is: each handler wrapped once at registration (error mapping, tolerant decoding).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from rtvol.proto.inference import grpc_service_pb2 as pb
from rtvol.proto.inference import grpc_service_pb2_grpc as pb_grpc
from rtvol.rpc import wrapping_server
from rtvol.services.model.model import DATATYPES, read_config

SHAPES = ("aio-pb", "aio-raw", "sync-pb", "sync-raw")
SERVICE = "inference.GRPCInferenceService"


class Answers:
    """The fixed replies for one model, as messages and as bytes."""

    def __init__(self, repo: Path, name: str) -> None:
        self.config = read_config(repo, name)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        label = {k: v[0] for k, v in DATATYPES.items()}
        self.metadata = pb.ModelMetadataResponse(
            name=name, versions=["1"], platform=self.config.platform,
            inputs=[tensor(name=i.name, datatype=label[i.data_type], shape=[-1, *i.dims])
                    for i in self.config.input],
            outputs=[tensor(name=o.name, datatype=label[o.data_type], shape=[-1, *o.dims])
                     for o in self.config.output])
        self.infer = pb.ModelInferResponse(model_name=name, model_version="1")
        for o in self.config.output:
            dims = [1, *o.dims]
            self.infer.outputs.add(name=o.name, datatype=label[o.data_type], shape=dims)
            self.infer.raw_output_contents.append(np.zeros(dims, DATATYPES[o.data_type][1]).tobytes())
        self.infer_bytes = self.infer.SerializeToString()

    def stream(self, request_id: str) -> pb.ModelStreamInferResponse:
        """A stream's answer carries its request's id: perf_analyzer matches answers by it."""
        reply = pb.ModelStreamInferResponse()
        reply.infer_response.CopyFrom(self.infer)
        reply.infer_response.id = request_id
        return reply


class Servicer(pb_grpc.GRPCInferenceServiceServicer):
    """The thread-pool server's methods (grpc.aio's servicer below answers the same)."""

    def __init__(self, answers: Answers) -> None:
        self.a = answers

    def ServerLive(self, request: Any, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request: Any, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=True)

    def ModelReady(self, request: Any, context: Any) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=True)

    def ServerMetadata(self, request: Any, context: Any) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="echo", version="0", extensions=["streaming"])

    def ModelMetadata(self, request: Any, context: Any) -> pb.ModelMetadataResponse:
        return self.a.metadata

    def ModelConfig(self, request: Any, context: Any) -> pb.ModelConfigResponse:
        return pb.ModelConfigResponse(config=self.a.config)

    def ModelInfer(self, request: Any, context: Any) -> pb.ModelInferResponse:
        return self.a.infer

    def ModelStreamInfer(self, requests: Iterator[Any], context: Any) -> Iterator[Any]:
        for request in requests:
            yield self.a.stream(request.id)


class AioServicer(pb_grpc.GRPCInferenceServiceServicer):
    """grpc.aio's servicer: the thread-pool one's answers, from coroutines (UNARY below)."""

    def __init__(self, answers: Answers) -> None:
        self.sync = Servicer(answers)

    async def ModelStreamInfer(self, requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        async for request in requests:
            yield self.sync.a.stream(request.id)


def _coroutine(name: str) -> Callable[..., Any]:
    async def method(self: AioServicer, request: Any, context: Any) -> Any:
        return getattr(self.sync, name)(request, context)
    method.__name__ = name
    return method


UNARY = ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelConfig",
         "ModelInfer")
for _name in UNARY:
    setattr(AioServicer, _name, _coroutine(_name))


def raw_handler(answers: Answers, aio: bool) -> grpc.GenericRpcHandler:
    """ModelInfer and ModelStreamInfer on bytes: grpc calls no (de)serializer. A stream's
    answer needs its request's id, so the stream handler parses each request for it."""
    infer = answers.infer_bytes

    def stream(raw: bytes) -> bytes:
        return answers.stream(pb.ModelInferRequest.FromString(raw).id).SerializeToString()
    if aio:
        async def unary(request: bytes, context: Any) -> bytes:
            return infer

        async def streaming(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
            async for request in requests:
                yield stream(request)
        u: Any = unary
        s: Any = streaming
    else:
        def unary_sync(request: bytes, context: Any) -> bytes:
            return infer

        def streaming_sync(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
            for request in requests:
                yield stream(request)
        u, s = unary_sync, streaming_sync
    return grpc.method_handlers_generic_handler(SERVICE, {
        "ModelInfer": grpc.unary_unary_rpc_method_handler(u),
        "ModelStreamInfer": grpc.stream_stream_rpc_method_handler(s)})


def build(shape: str, answers: Answers, options: Sequence[tuple[str, Any]], threads: int,
          wrapped: bool = False) -> Any:
    """A grpc.aio shape must be built on its running event loop."""
    aio = shape.startswith("aio")
    server: Any = (wrapping_server(options=options) if aio and wrapped
                   else grpc.aio.server(options=list(options)) if aio
                   else grpc.server(futures.ThreadPoolExecutor(threads), options=list(options)))
    if shape.endswith("raw"):  # registered first: grpc asks generic handlers in order
        server.add_generic_rpc_handlers((raw_handler(answers, aio),))
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(AioServicer(answers) if aio else Servicer(answers),
                                                       server)
    return server


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m rtvol.loadtest.bench.echo_kserve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo", type=Path, required=True, help="model repository (config.pbtxt read)")
    p.add_argument("--model", default="rtvol_cnn")
    p.add_argument("--shape", choices=SHAPES, default="aio-pb")
    p.add_argument("--threads", type=int, default=4, help="sync shapes: thread pool size")
    p.add_argument("--wrapped", action="store_true",
                   help="aio shapes: through rtvol.rpc.WrappingServer, as every rtvol service")
    p.add_argument("--option", action="append", default=[], metavar="KEY=INT",
                   help="grpc server option (integer value), repeatable")
    a = p.parse_args(argv)
    options = [("grpc.so_reuseport", 0), *((k, int(v)) for k, v in (o.split("=", 1) for o in a.option))]
    answers = Answers(a.repo, a.model)
    if a.shape.startswith("aio"):
        async def run() -> None:  # a grpc.aio server belongs to the loop it is made on
            server = build(a.shape, answers, options, a.threads, a.wrapped)
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            print(f"echo listening on 127.0.0.1:{port}", flush=True)
            await server.wait_for_termination()
        asyncio.run(run())
        return
    server = build(a.shape, answers, options, a.threads)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"echo listening on 127.0.0.1:{port}", flush=True)
    server.wait_for_termination()

if __name__ == "__main__":
    main()
