"""GRPCInferenceService: the Open Inference Protocol (plus Triton's ModelConfig and
ModelStreamInfer) on top of the data plane. Protocol only: no validation or batching here."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator
from importlib import metadata as importlib_metadata

import grpc
from opentelemetry import trace
from opentelemetry.context import Context

from rtvol.errors import RtvolError, Unavailable
from rtvol.proto.inference import grpc_service_pb2 as pb
from rtvol.proto.inference import grpc_service_pb2_grpc as pb_grpc
from rtvol.services.model.dataplane import Call, DataPlane
from rtvol.services.model.shm import Regions
from rtvol.telemetry import extract_metadata, extract_traceparent, traced

log = logging.getLogger(__name__)
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
EXTENSIONS = ("model_configuration", "streaming")
_NO_SPAN = contextlib.nullcontext()


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, dataplane: DataPlane, tracer: trace.Tracer, stream_max_inflight: int = 128) -> None:
        """A no-op ``tracer`` (nothing exports spans): no spans are made and no context is
        extracted (a recording SDK span and the extraction cost tens of µs per request)."""
        self.dataplane = dataplane
        self.registry = dataplane.registry
        self.tracer = tracer if traced(tracer) else None
        self.stream_max_inflight = stream_max_inflight
        self.draining = False  # set on SIGTERM: open streams take no more requests
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
        shm = ("system_shared_memory",) if self.dataplane.regions is not None else ()
        return pb.ServerMetadataResponse(name="rtvol-model", version=self.version,
                                         extensions=EXTENSIONS + shm)

    def _regions(self) -> Regions:
        if self.dataplane.regions is None:
            raise Unavailable("system shared memory is off in this sidecar (start it with --shm-dir)")
        return self.dataplane.regions

    async def SystemSharedMemoryRegister(self, request: pb.SystemSharedMemoryRegisterRequest,
                                         context: grpc.aio.ServicerContext
                                         ) -> pb.SystemSharedMemoryRegisterResponse:
        self._regions().register(request)
        return pb.SystemSharedMemoryRegisterResponse()

    async def SystemSharedMemoryUnregister(self, request: pb.SystemSharedMemoryUnregisterRequest,
                                           context: grpc.aio.ServicerContext
                                           ) -> pb.SystemSharedMemoryUnregisterResponse:
        self._regions().unregister(request.name)
        return pb.SystemSharedMemoryUnregisterResponse()

    async def SystemSharedMemoryStatus(self, request: pb.SystemSharedMemoryStatusRequest,
                                       context: grpc.aio.ServicerContext
                                       ) -> pb.SystemSharedMemoryStatusResponse:
        return self._regions().status(request.name)

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

    def _span(self, name: str, context: grpc.aio.ServicerContext
              ) -> contextlib.AbstractContextManager[trace.Span | None]:
        if self.tracer is None:
            return _NO_SPAN
        parent = extract_metadata(context.invocation_metadata())
        return self.tracer.start_as_current_span(name, context=parent, kind=trace.SpanKind.SERVER)

    async def ModelInfer(self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
                         ) -> pb.ModelInferResponse:
        with self._span("ModelInfer", context) as span:
            if span is not None:
                span.set_attribute("rtvol.model", request.model_name)
            return await self.dataplane.infer(request)

    async def ModelStreamInfer(self, request_iterator: AsyncIterator[pb.ModelInferRequest],
                               context: grpc.aio.ServicerContext
                               ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """While no request of the stream is in flight, requests are read and answered in this
        generator: a lone request computed in its caller's turn (batcher.py) goes straight
        back, with no task or queue between it and its answer (one client at a time, e.g.
        perf_analyzer c1). The first request that must wait for a batch turns the stream
        concurrent for good: one reader task queues requests (so they can share a batch) and
        each batch's done callback queues the answers. A failed request answers in-band with
        error_message and the stream goes on."""
        parent = None if self.tracer is None else extract_metadata(context.invocation_metadata())
        requests = aiter(request_iterator)
        async for request in requests:
            span = self._stream_span(request, parent)
            try:
                call = self.dataplane.submit(request)
            except Exception as e:
                yield _answered(_stream_error(request, e), span)
            else:
                if not call.future.done():
                    async for reply in self._concurrent(requests, call, span, parent):
                        yield reply
                    return
                yield _answered(_reply(call), span)
            if self.draining:  # the stream ends once what it holds is answered
                return

    def _stream_span(self, request: pb.ModelInferRequest, parent: Context | None) -> trace.Span | None:
        if self.tracer is None:
            return None
        return self.tracer.start_span("ModelStreamInfer", context=_request_context(request, parent),
                                      kind=trace.SpanKind.SERVER,
                                      attributes={"rtvol.model": request.model_name})

    async def _concurrent(self, requests: AsyncIterator[pb.ModelInferRequest], first: Call,
                          first_span: trace.Span | None, parent: Context | None
                          ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """The rest of a stream whose ``first`` call waits for a batch."""
        out: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue()
        # taken per request read, given back once its answer is written: a client that sends
        # without reading is held back by flow control instead of queueing answers here
        slots = asyncio.Semaphore(self.stream_max_inflight)
        in_flight = 0
        reading = True

        def answered(reply: pb.ModelStreamInferResponse, span: trace.Span | None) -> None:
            nonlocal in_flight
            out.put_nowait(_answered(reply, span))
            in_flight -= 1
            if not reading and in_flight == 0:
                out.put_nowait(None)

        def done(call: Call, span: trace.Span | None, _: object) -> None:
            answered(_reply(call), span)

        def queued(call: Call, span: trace.Span | None) -> None:
            nonlocal in_flight
            in_flight += 1
            call.future.add_done_callback(functools.partial(done, call, span))

        async def read() -> None:
            nonlocal in_flight, reading
            try:
                async for request in requests:
                    await slots.acquire()
                    span = self._stream_span(request, parent)
                    try:
                        call = self.dataplane.submit(request)
                    except Exception as e:
                        in_flight += 1
                        answered(_stream_error(request, e), span)
                        continue
                    queued(call, span)
                    if self.draining:  # the stream ends once what it holds is answered
                        break
            finally:
                reading = False
                if in_flight == 0:
                    out.put_nowait(None)

        await slots.acquire()
        queued(first, first_span)
        reader = asyncio.create_task(read())
        try:
            while (item := await out.get()) is not None:
                yield item
                slots.release()
            await reader  # surfaces a broken request stream
        finally:
            reader.cancel()


def _reply(call: Call) -> pb.ModelStreamInferResponse:
    """The stream's answer for a finished ``call``: its response, or its error in-band."""
    try:
        return pb.ModelStreamInferResponse(infer_response=call.response())
    except Exception as e:
        return _stream_error(call.request, e)


def _answered(reply: pb.ModelStreamInferResponse, span: trace.Span | None) -> pb.ModelStreamInferResponse:
    if span is not None:
        span.end()
    return reply


def _request_context(request: pb.ModelInferRequest, stream: Context | None) -> Context | None:
    """The sender's per-request traceparent parameter, else the stream's opening context."""
    param = request.parameters.get("traceparent")
    return extract_traceparent(param.string_param, stream) if param is not None else stream


def _stream_error(request: pb.ModelInferRequest, error: Exception) -> pb.ModelStreamInferResponse:
    if not isinstance(error, RtvolError):
        log.error("stream request failed", exc_info=error)
    message = str(error) if isinstance(error, RtvolError) else f"internal error: {type(error).__name__}"
    return pb.ModelStreamInferResponse(error_message=message, infer_response=pb.ModelInferResponse(
        id=request.id, model_name=request.model_name))
