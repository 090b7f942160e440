"""Between protocol and backend: resolve the model, validate and decode the input, batch,
encode, and count every outcome.

``submit`` does everything up to the batch queue synchronously and returns a ``Call``
whose future completes with the batch; the stream handler finishes calls from a done
callback instead of paying for a task per request.

Every answer carries the sidecar's own time for it (decode to encode: its queue and its
compute) as the response parameter ``rpc.SERVER_TIME_PARAM`` (the gateway's breaker
judges the sidecar on it).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np

from rtvol.errors import InvalidInput, NotFound, ResourceExhausted, RtvolError, Unavailable
from rtvol.proto.inference import grpc_service_pb2 as pb
from rtvol.rpc import SERVER_TIME_PARAM
from rtvol.services.model import metrics, tensors
from rtvol.services.model.model import LoadedModel, TensorInfo
from rtvol.services.model.registry import Registry
from rtvol.services.model.shm import Regions


def _reason(error: BaseException) -> str:
    if isinstance(error, InvalidInput):
        return error.reason
    if isinstance(error, NotFound):
        return "not_found"
    if isinstance(error, Unavailable):
        return "unavailable"
    if isinstance(error, ResourceExhausted):
        return "queue_full"
    return "internal"


@dataclass(slots=True)
class Call:
    """One request queued for a batch."""

    request: pb.ModelInferRequest
    model: LoadedModel
    outputs: tuple[TensorInfo, ...]
    future: asyncio.Future[dict[str, np.ndarray]]
    start: float
    metrics: metrics.ModelMetrics

    def finish(self, values: dict[str, np.ndarray]) -> pb.ModelInferResponse:
        response = tensors.encode(self.request, self.model, self.outputs, values)
        took = time.perf_counter() - self.start
        response.parameters[SERVER_TIME_PARAM].int64_param = int(took * 1e6)
        self.metrics.successes.inc()
        self.metrics.request_seconds.observe(took)
        return response

    def failed(self, error: BaseException) -> None:
        self.metrics.failed(_reason(error))

    def response(self) -> pb.ModelInferResponse:
        """The answer once ``future`` is done; raises (and counts) a backend failure."""
        error = self.future.exception()
        if error is not None:
            self.failed(error)
            raise error
        return self.finish(self.future.result())


class DataPlane:
    def __init__(self, registry: Registry, regions: Regions | None = None) -> None:
        """``regions``: system shared memory clients may register (None: the extension is off)."""
        self.registry = registry
        self.regions = regions
        self.ready = False

    def submit(self, request: pb.ModelInferRequest) -> Call:
        """Validate and queue; raises (and counts) an RtvolError for a refused request."""
        start = time.perf_counter()
        # an unknown name is one label value, so callers cannot grow the metric without bound
        m = metrics.for_model(request.model_name if request.model_name in self.registry.served
                              else "unknown")
        m.requests.inc()
        try:
            if not self.ready:
                raise Unavailable("models are still loading")
            model, batcher = self.registry.get(request.model_name, request.model_version)
            x = tensors.decode_input(request, model, self.regions)
            outputs = tensors.requested_outputs(request, model)
            future = batcher.submit(x)
        except RtvolError as e:
            m.failed(_reason(e))
            raise
        except Exception:
            m.failed("internal")
            raise
        return Call(request, model, outputs, future, start, m)

    async def infer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        call = self.submit(request)
        try:
            values = await call.future
        except Exception as e:
            call.failed(e)
            raise
        return call.finish(values)
