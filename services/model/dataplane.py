"""Between protocol and backend: resolve the model, validate and decode the input, batch,
encode, and count every outcome."""

from __future__ import annotations

import time

from rtvol.errors import InvalidInput, NotFound, Unavailable
from rtvol.proto.inference import grpc_service_pb2 as pb
from services.model import metrics, tensors
from services.model.registry import Registry


class DataPlane:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.ready = False

    async def infer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        start = time.perf_counter()
        # an unknown name is one label value, so callers cannot grow the metric without bound
        label = request.model_name if request.model_name in self.registry.served else "unknown"
        metrics.REQUESTS.labels(label).inc()
        try:
            if not self.ready:
                raise Unavailable("models are still loading")
            model, batcher = self.registry.get(request.model_name, request.model_version)
            x = tensors.decode_input(request, model)
            outputs = tensors.requested_outputs(request, model)
            values = await batcher.infer(x)
            response = tensors.encode(request, model, outputs, values)
        except InvalidInput as e:
            metrics.FAILURES.labels(label, e.reason).inc()
            raise
        except NotFound:
            metrics.FAILURES.labels(label, "not_found").inc()
            raise
        except Unavailable:
            metrics.FAILURES.labels(label, "unavailable").inc()
            raise
        except Exception:
            metrics.FAILURES.labels(label, "internal").inc()
            raise
        metrics.SUCCESSES.labels(label).inc()
        metrics.REQUEST.labels(label).observe(time.perf_counter() - start)
        return response
