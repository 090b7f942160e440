"""GRPCInferenceService: the Open Inference Protocol (plus Triton's ModelConfig and
ModelStreamInfer) on top of the data plane. Protocol only: no validation or batching here."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from importlib import metadata as importlib_metadata

import grpc
from opentelemetry import trace

from rtvol.errors import RtvolError
from rtvol.proto.inference import grpc_service_pb2 as pb
from rtvol.proto.inference import grpc_service_pb2_grpc as pb_grpc
from rtvol.telemetry import extract_metadata
from services.model.dataplane import DataPlane

log = logging.getLogger(__name__)
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
EXTENSIONS = ("model_configuration", "streaming")


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, dataplane: DataPlane, tracer: trace.Tracer) -> None:
        self.dataplane = dataplane
        self.registry = dataplane.registry
        self.tracer = tracer
        try:
            self.version = importlib_metadata.version("rtvol")
        except importlib_metadata.PackageNotFoundError:
            self.version = "0"

    async def ServerLive(self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
                         ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
                          ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.dataplane.ready)

    async def ModelReady(self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
                         ) -> pb.ModelReadyResponse:
        try:
            self.registry.get(request.name, request.version)
        except RtvolError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=self.dataplane.ready)

    async def ServerMetadata(self, request: pb.ServerMetadataRequest,
                             context: grpc.aio.ServicerContext) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="rtvol-model", version=self.version, extensions=EXTENSIONS)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest,
                            context: grpc.aio.ServicerContext) -> pb.ModelMetadataResponse:
        model, _ = self.registry.get(request.name, request.version)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=model.name, versions=[model.version_label], platform=model.config.platform,
            inputs=[tensor(name=model.input.name, datatype=model.input.datatype,
                           shape=[-1, *model.input.dims])],
            outputs=[tensor(name=o.name, datatype=o.datatype, shape=[-1, *o.dims])
                     for o in model.outputs])

    async def ModelConfig(self, request: pb.ModelConfigRequest, context: grpc.aio.ServicerContext
                          ) -> pb.ModelConfigResponse:
        model, _ = self.registry.get(request.name, request.version)
        return pb.ModelConfigResponse(config=model.config)

    async def ModelInfer(self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
                         ) -> pb.ModelInferResponse:
        parent = extract_metadata(context.invocation_metadata())
        with self.tracer.start_as_current_span("ModelInfer", context=parent,
                                               kind=trace.SpanKind.SERVER) as span:
            span.set_attribute("rtvol.model", request.model_name)
            return await self.dataplane.infer(request)

    async def ModelStreamInfer(self, request_iterator: AsyncIterator[pb.ModelInferRequest],
                               context: grpc.aio.ServicerContext
                               ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Requests on the stream run concurrently (so they can share a batch); a failed one
        answers in-band with error_message and the stream goes on."""
        parent = extract_metadata(context.invocation_metadata())
        out: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue()
        running: set[asyncio.Task[None]] = set()

        async def one(request: pb.ModelInferRequest) -> None:
            with self.tracer.start_as_current_span("ModelStreamInfer", context=parent,
                                                   kind=trace.SpanKind.SERVER):
                try:
                    out.put_nowait(pb.ModelStreamInferResponse(
                        infer_response=await self.dataplane.infer(request)))
                except Exception as e:
                    if not isinstance(e, RtvolError):
                        log.exception("stream request failed")
                    message = str(e) if isinstance(e, RtvolError) else f"internal error: {type(e).__name__}"
                    out.put_nowait(pb.ModelStreamInferResponse(
                        error_message=message, infer_response=pb.ModelInferResponse(
                            id=request.id, model_name=request.model_name)))

        async def read() -> None:
            async for request in request_iterator:
                task = asyncio.create_task(one(request))
                running.add(task)
                task.add_done_callback(running.discard)
            await asyncio.gather(*running)
            out.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while (item := await out.get()) is not None:
                yield item
        finally:
            reader.cancel()
