"""Tier 1: the model sidecar over long-lived ModelStreamInfer streams (Open Inference
Protocol). A stream carries many requests at once, matched to answers by id; a broken
stream fails its pending requests and is reopened on next use. Several streams over one
channel with round_robin spread over replicas behind a DNS name."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import grpc
import numpy as np

from rtvol import auth, tls
from rtvol.proto.inference import grpc_service_pb2 as pb
from rtvol.proto.inference import grpc_service_pb2_grpc as pb_grpc
from rtvol.rpc import MAX_MESSAGE_BYTES
from rtvol.services.gateway import metrics
from rtvol.services.gateway.breaker import Breaker, State
from rtvol.tasks import BackgroundTask
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
PROBE_TIMEOUT_S = 1.0  # a first connection on a busy machine takes longer than one batch may


def iso(wall_s: float) -> str:
    """A wall-clock time as ISO 8601 UTC to the millisecond, e.g. 2026-12-01T20:51:07.114Z."""
    return datetime.fromtimestamp(wall_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class UpstreamError(RuntimeError):
    """The sidecar failed a request, or its stream broke."""


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

    async def infer(self, windows: np.ndarray, version: str = "") -> tuple[dict[str, np.ndarray], str]:
        """Outputs by name and the model version that answered (``version``: that one, else
        the one the sidecar serves)."""
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
        return _decode(response), response.model_version

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


class Tier1:
    """The sidecar behind its breaker and a timeout; a batch slower than the latency budget
    counts as a failure, so a slow sidecar opens the breaker as a dead one does. The budget
    and the timeout grow by ``per_window_s`` for each window after the first: a large
    pipeline batch takes longer without the sidecar being slow.

    A background probe asks the sidecar's ModelReady every ``probe_s``; while the answer is
    not "ready" (unreachable, or its model not loaded) it keeps the breaker open, so tier 2
    answers without trying tier 1 even when no request has failed yet, and /readyz says why
    and since when. Once the probe passes, the breaker's own half-open calls close it."""

    def __init__(self, client: SidecarClient, breaker: Breaker, timeout_s: float, probe_s: float = 1.0,
                 per_window_s: float = 0.0) -> None:
        self.client, self.breaker, self.timeout_s, self.probe_s = client, breaker, timeout_s, probe_s
        self.per_window_s = per_window_s
        self.version = ""
        # what the shadow yields to (shadow.py): served calls out now, and the last one's
        # latency as a share of its budget (1.0: at the budget)
        self.in_flight, self.last_load = 0, 0.0
        self.idle = asyncio.Event()
        self.idle.set()
        self.down, self.down_since = "sidecar not probed yet", time.time()  # down == "": probe passed
        self._watch = BackgroundTask()

    def status(self) -> tuple[bool, str]:
        """(does the next request try tier 1, why / why not): for /readyz."""
        if self.down:
            return False, f"{self.down} since {iso(self.down_since)}"
        if self.breaker.refusing():
            return False, f"sidecar breaker open since {iso(self.breaker.since)}"
        if self.breaker.state is not State.CLOSED:
            return True, "sidecar breaker half-open: the next request tries tier 1"
        return True, "sidecar ready"

    async def probe(self) -> bool:
        """Ask the sidecar once; when it is not ready, open the breaker. True when ready."""
        reason = await self.client.ready(PROBE_TIMEOUT_S)
        if reason:
            if not self.down:  # was up: down from now (before the first answer: since start)
                self.down_since = time.time()
            self.down = reason
            self.breaker.trip()
        else:
            self.down = ""
        return not reason

    async def wait_ready(self, wait_s: float) -> bool:
        """At start: probe until the sidecar is ready or ``wait_s`` has passed."""
        deadline = time.monotonic() + wait_s
        while not await self.probe():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.1)
        return True

    async def _probe_forever(self) -> None:
        while True:
            await asyncio.sleep(self.probe_s)
            await self.probe()

    def start(self) -> None:
        self._watch.start(self._probe_forever())

    async def stop(self) -> None:
        await self._watch.stop()

    async def batch(self, windows: np.ndarray) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        allowance = self.per_window_s * (len(windows) - 1)
        self.in_flight += 1
        self.idle.clear()
        try:
            async with asyncio.timeout(self.timeout_s + allowance):
                out, self.version = await self.client.infer(windows)
        except Exception as e:
            metrics.UPSTREAM_ERRORS.labels("sidecar", type(e).__name__).inc()
            self.breaker.record(False)
            self.last_load = 1.0
            raise
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self.idle.set()
        latency = time.perf_counter() - start - allowance
        self.breaker.record(True, latency)
        self.last_load = latency / self.breaker.latency_budget_s
        return out
