"""The sidecar's Unix-socket listener and trace-context propagation, as a real process."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pytest

tc = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is the acceptance client")
from opentelemetry.proto.collector.trace.v1 import (  # noqa: E402  (after the importorskip)
    trace_service_pb2,
    trace_service_pb2_grpc,
)
from opentelemetry.proto.trace.v1 import trace_pb2  # noqa: E402

from rtvol.loadtest.bench.launch import Sidecar  # noqa: E402
from rtvol.repository import write_version  # noqa: E402
from rtvol.training.cnn import VolCNN  # noqa: E402
from rtvol.training.export import SERVING, to_onnx  # noqa: E402

pytestmark = pytest.mark.integration
MODEL = "rtvol_cnn"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models")
    write_version(path, MODEL, to_onnx(VolCNN()), {}, SERVING)
    return path


def infer_once(client: tc.InferenceServerClient, headers: dict[str, str] | None = None) -> np.ndarray:
    deadline = time.monotonic() + 60
    while not client.is_server_ready():
        assert time.monotonic() < deadline, "sidecar not ready"
        time.sleep(0.05)
    inp = tc.InferInput("window", [1, 50, 12], "FP32")
    inp.set_data_from_numpy(np.full((1, 50, 12), 1e-3, np.float32))
    return np.asarray(client.infer(MODEL, [inp], headers=headers).as_numpy("rv"))


def test_unix_socket_serves_the_same_answers_as_tcp(repo: Path, tmp_path: Path) -> None:
    path = tmp_path / "model.sock"
    proc = Sidecar(repo, ["--unix-socket", str(path)])
    try:
        over_unix = infer_once(tc.InferenceServerClient(f"unix:{path}"))
        over_tcp = infer_once(tc.InferenceServerClient(proc.url))
    finally:
        assert proc.stop() == 0
    assert over_unix.shape == (1, 1)
    np.testing.assert_array_equal(over_unix, over_tcp)


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace endpoint that keeps every exported span."""

    def __init__(self) -> None:
        self.spans: queue.Queue[trace_pb2.Span] = queue.Queue()

    def Export(self, request: trace_service_pb2.ExportTraceServiceRequest, context: object
               ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                for span in scope.spans:
                    self.spans.put(span)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, int]]:
    server = grpc.server(futures.ThreadPoolExecutor(2))
    sink = Receiver()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(sink, server)
    port = server.add_insecure_port("127.0.0.1:0")  # bound here: no window for another to take it
    server.start()
    yield sink, port
    server.stop(0)


def test_model_infer_span_continues_the_callers_trace(repo: Path, receiver: tuple[Receiver, int]) -> None:
    sink, port = receiver
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}", "OTEL_BSP_SCHEDULE_DELAY": "50"}
    proc = Sidecar(repo, env=env)
    try:
        infer_once(tc.InferenceServerClient(proc.url),
                   headers={"traceparent": f"00-{TRACE_ID}-{PARENT_SPAN}-01"})
        span = sink.spans.get(timeout=30)
        while span.name != "ModelInfer":
            span = sink.spans.get(timeout=30)
    finally:
        assert proc.stop() == 0
    assert span.trace_id.hex() == TRACE_ID
    assert span.parent_span_id.hex() == PARENT_SPAN
