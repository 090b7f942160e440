"""The model sidecar's client: long-lived ModelStreamInfer streams (Open Inference Protocol).
A stream carries many requests at once, matched to answers by id; a broken stream fails its
pending requests and is reopened on next use. Several streams over one channel with
round_robin spread over replicas behind a DNS name.

With a sidecar on the same host (``shm``), a big batch's windows go through a registered
system shared-memory region (rtvol/shm.py) instead of the request; the region is registered
again on the first big call after a stream was (re)opened, since a new stream may mean a
restarted sidecar. Where registering fails the windows go in the requests, as before."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator
from typing import NamedTuple

import grpc
import numpy as np

from rtvol import auth, shm, tls
from rtvol.proto.inference import grpc_service_pb2 as pb
from rtvol.proto.inference import grpc_service_pb2_grpc as pb_grpc
from rtvol.rpc import MAX_MESSAGE_BYTES, SERVER_TIME_PARAM
from rtvol.services.gateway.metrics import SIDECAR_SHM
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
# Below this a call's bytes cost less than the slot bookkeeping saves (~27 windows).
SHM_MIN_BYTES = 64 * 1024
log = logging.getLogger(__name__)


class Answer(NamedTuple):
    outputs: dict[str, np.ndarray]  # by name
    version: str  # the model version that answered
    server_s: float | None  # the sidecar's own time for the call (None: it does not say, e.g. Triton)


def _decode(response: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    return {o.name: np.frombuffer(raw, "<f4").reshape(tuple(o.shape))
            for o, raw in zip(response.outputs, response.raw_output_contents, strict=True)}


class _Stream:
    def __init__(self, stub: pb_grpc.GRPCInferenceServiceStub, credential: list[tuple[str, str]],
                 slots: shm.Slots | None) -> None:
        self._out: asyncio.Queue[pb.ModelInferRequest | None] = asyncio.Queue()
        self.pending: dict[str, asyncio.Future[pb.ModelInferResponse]] = {}
        self._slots = slots
        self.held: dict[str, int] = {}  # request id -> its shared-memory slot, until answered
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
                slot = self.held.pop(msg.infer_response.id, None)
                if slot is not None and self._slots is not None:
                    self._slots.release(slot)  # answered: the sidecar no longer reads it
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
            # the request side ends with the stream: grpc's task feeding it would otherwise wait
            # on the queue until the collector destroys it, pending (a dead sidecar's streams)
            self._out.put_nowait(None)
            for fut in self.pending.values():
                if not fut.done():
                    fut.set_exception(error)
            self.pending.clear()
            if self._slots is not None:
                for slot in self.held.values():
                    self._slots.release(slot)
                self.held.clear()

    def send(self, request: pb.ModelInferRequest, slot: int | None = None
             ) -> asyncio.Future[pb.ModelInferResponse]:
        fut: asyncio.Future[pb.ModelInferResponse] = asyncio.get_running_loop().create_future()
        self.pending[request.id] = fut
        if slot is not None:
            self.held[request.id] = slot
        self._out.put_nowait(request)
        return fut

    def close(self) -> None:
        self._out.put_nowait(None)
        self._call.cancel()
        self._reader.cancel()


class SidecarClient:
    def __init__(self, url: str, model: str, streams: int = 2, client_tls: tls.ClientTLS | None = None,
                 api_key: str = "", slots: shm.Slots | None = None) -> None:
        """``slots``: a shared-memory region the sidecar (on this host) can map, for big calls."""
        self.channel = tls.channel(url, client_tls, CHANNEL_OPTIONS)
        self.credential = auth.metadata(api_key)  # once per stream, not per request
        self.stub = pb_grpc.GRPCInferenceServiceStub(self.channel)
        self.model = model
        self._streams: list[_Stream | None] = [None] * max(1, streams)
        self._next = itertools.cycle(range(len(self._streams)))
        self._ids = itertools.count()
        self.slots = slots
        self.shm_registered: bool | None = None  # None: to be (re)registered before the next big call
        self._shm_refusal_logged = False  # once until a registration succeeds, not once a call

    def _stream(self) -> _Stream:
        i = next(self._next)
        s = self._streams[i]
        if s is None or not s.alive:
            s = self._streams[i] = _Stream(self.stub, self.credential, self.slots)
            self.shm_registered = None
        return s

    async def _register(self, slots: shm.Slots) -> bool:
        request = pb.SystemSharedMemoryRegisterRequest(name=slots.name, key=slots.key,
                                                       byte_size=slots.byte_size)
        try:
            await self.stub.SystemSharedMemoryRegister(request, timeout=1.0, metadata=self.credential)
        except grpc.aio.AioRpcError as e:
            if e.code() is grpc.StatusCode.ALREADY_EXISTS:  # Triton's answer to a second register
                return self._registered()
            if not self._shm_refusal_logged:
                log.warning("sidecar shared memory not used (%s: %s): windows go in the requests",
                            e.code().name, e.details())
                self._shm_refusal_logged = True
            return False
        return self._registered()

    def _registered(self) -> bool:
        self._shm_refusal_logged = False
        return True

    async def _slot(self, x: np.ndarray) -> int | None:
        """A slot now holding ``x`` for a big call, else None (its bytes go in the request)."""
        if self.slots is None or x.nbytes < SHM_MIN_BYTES:
            return None
        if self.shm_registered is None:
            self._stream()  # a dead stream is renewed first: registering is for the sidecar it reaches
            self.shm_registered = await self._register(self.slots)
        slot = self.slots.write(x) if self.shm_registered else None
        SIDECAR_SHM.labels("shared_memory" if slot is not None else "request").inc()
        return slot

    async def infer(self, windows: np.ndarray, version: str = "") -> Answer:
        """``version``: that one, else the one the sidecar serves."""
        x = np.ascontiguousarray(windows, "<f4")
        slot = await self._slot(x)
        request = pb.ModelInferRequest(model_name=self.model, model_version=version, id=str(next(self._ids)))
        tensor = request.inputs.add(name="window", datatype="FP32", shape=x.shape)
        if slot is None:
            request.raw_input_contents.append(x.tobytes())
        else:
            assert self.slots is not None
            tensor.parameters[shm.REGION_PARAM].string_param = self.slots.name
            tensor.parameters[shm.OFFSET_PARAM].int64_param = slot * self.slots.slot_bytes
            tensor.parameters[shm.BYTE_SIZE_PARAM].int64_param = x.nbytes
        if tp := traceparent():  # per request: the stream's own metadata names only its opener
            request.parameters["traceparent"].string_param = tp
        stream = self._stream()
        try:
            response = await stream.send(request, slot)
        except UpstreamError as e:
            if slot is not None and shm.REGION_PARAM in str(e):  # the sidecar forgot it: register again
                self.shm_registered = None
            raise
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
        if self.slots is not None:
            if self.shm_registered:
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await self.stub.SystemSharedMemoryUnregister(
                        pb.SystemSharedMemoryUnregisterRequest(name=self.slots.name), timeout=0.5,
                        metadata=self.credential)
            self.slots.close()
        await self.channel.close()
