"""The model sidecar's client: long-lived ModelStreamInfer streams (Open Inference Protocol).
A stream carries many requests at once, matched to answers by id; a broken stream fails its
pending requests and is reopened on next use. Several streams over one channel with
round_robin spread over replicas behind a DNS name."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import NamedTuple

import grpc
import numpy as np

from rtvol import auth, tls
from rtvol.proto.inference import grpc_service_pb2 as pb
from rtvol.proto.inference import grpc_service_pb2_grpc as pb_grpc
from rtvol.rpc import MAX_MESSAGE_BYTES, SERVER_TIME_PARAM
from rtvol.services.gateway.tier1 import UpstreamError
from rtvol.telemetry import inject_metadata, traceparent

CHANNEL_OPTIONS = [
    ("grpc.lb_policy_name", "round_robin"),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # a restarted sidecar is found within a second, not grpc's default of up to 2 minutes
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 10_000),
]


class Answer(NamedTuple):
    outputs: dict[str, np.ndarray]  # by name
    version: str  # the model version that answered
    server_s: float | None  # the sidecar's own time for the call (None: it does not say, e.g. Triton)


def _decode(response: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    return {o.name: np.frombuffer(raw, "<f4").reshape(tuple(o.shape))
            for o, raw in zip(response.outputs, response.raw_output_contents, strict=True)}


class _Stream:
    def __init__(self, stub: pb_grpc.GRPCInferenceServiceStub, credential: list[tuple[str, str]]) -> None:
        self._out: asyncio.Queue[pb.ModelInferRequest | None] = asyncio.Queue()
        self.pending: dict[str, asyncio.Future[pb.ModelInferResponse]] = {}
        self.alive = True
        self._call = stub.ModelStreamInfer(self._requests(), metadata=[*inject_metadata(), *credential])
        self._reader = asyncio.create_task(self._read())

    async def _requests(self) -> AsyncIterator[pb.ModelInferRequest]:
        while (item := await self._out.get()) is not None:
            yield item

    async def _read(self) -> None:
        error = UpstreamError("sidecar stream ended")
        try:
            async for msg in self._call:
                fut = self.pending.pop(msg.infer_response.id, None)
                if fut is None or fut.done():
                    continue
                if msg.error_message:
                    fut.set_exception(UpstreamError(msg.error_message))
                else:
                    fut.set_result(msg.infer_response)
        except grpc.aio.AioRpcError as e:
            error = UpstreamError(f"sidecar stream: {e.code().name} {e.details()}")
        except asyncio.CancelledError:
            error = UpstreamError("sidecar stream closed")
        finally:
            self.alive = False
            for fut in self.pending.values():
                if not fut.done():
                    fut.set_exception(error)
            self.pending.clear()

    def send(self, request: pb.ModelInferRequest) -> asyncio.Future[pb.ModelInferResponse]:
        fut: asyncio.Future[pb.ModelInferResponse] = asyncio.get_running_loop().create_future()
        self.pending[request.id] = fut
        self._out.put_nowait(request)
        return fut

    def close(self) -> None:
        self._out.put_nowait(None)
        self._call.cancel()
        self._reader.cancel()


class SidecarClient:
    def __init__(self, url: str, model: str, streams: int = 2, client_tls: tls.ClientTLS | None = None,
                 api_key: str = "") -> None:
        self.channel = tls.channel(url, client_tls, CHANNEL_OPTIONS)
        self.credential = auth.metadata(api_key)  # once per stream, not per request
        self.stub = pb_grpc.GRPCInferenceServiceStub(self.channel)
        self.model = model
        self._streams: list[_Stream | None] = [None] * max(1, streams)
        self._next = itertools.cycle(range(len(self._streams)))
        self._ids = itertools.count()

    def _stream(self) -> _Stream:
        i = next(self._next)
        s = self._streams[i]
        if s is None or not s.alive:
            s = self._streams[i] = _Stream(self.stub, self.credential)
        return s

    async def infer(self, windows: np.ndarray, version: str = "") -> Answer:
        """``version``: that one, else the one the sidecar serves."""
        x = np.ascontiguousarray(windows, "<f4")
        request = pb.ModelInferRequest(model_name=self.model, model_version=version, id=str(next(self._ids)),
                                       raw_input_contents=[x.tobytes()])
        request.inputs.add(name="window", datatype="FP32", shape=x.shape)
        if tp := traceparent():  # per request: the stream's own metadata names only its opener
            request.parameters["traceparent"].string_param = tp
        stream = self._stream()
        try:
            response = await stream.send(request)
        finally:
            stream.pending.pop(request.id, None)
        server = response.parameters.get(SERVER_TIME_PARAM)
        return Answer(_decode(response), response.model_version,
                      None if server is None else server.int64_param / 1e6)

    async def ready(self, timeout_s: float) -> str:
        """'' when the sidecar says the model is ready (ModelReady), else why not."""
        try:
            reply = await self.stub.ModelReady(pb.ModelReadyRequest(name=self.model), timeout=timeout_s,
                                               metadata=self.credential)
        except grpc.aio.AioRpcError as e:
            return f"sidecar unreachable ({e.code().name})"
        except Exception as e:  # whatever it is, the probe goes on; the breaker stays open
            return f"sidecar probe failed ({type(e).__name__})"
        return "" if reply.ready else f"sidecar has not loaded {self.model}"

    async def close(self) -> None:
        for s in self._streams:
            if s is not None:
                s.close()
        await self.channel.close()
