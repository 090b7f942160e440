"""Metrics and tracing shared by every service.

* Prometheus: LATENCY_BUCKETS resolve 10 µs; `start_metrics` serves /metrics.
* OpenTelemetry: `setup_tracing` configures a tracer provider from the standard OTEL_*
  variables (OTLP gRPC exporter when OTEL_EXPORTER_OTLP_ENDPOINT is set); W3C trace
  context travels in gRPC metadata via `inject_metadata` / `extract_metadata`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from opentelemetry import context, propagate, trace

# seconds; fine below 1 ms (the model runs in tens of µs), coarse above
LATENCY_BUCKETS: tuple[float, ...] = (
    10e-6, 20e-6, 30e-6, 40e-6, 50e-6, 75e-6, 100e-6, 150e-6, 200e-6, 250e-6, 300e-6, 400e-6,
    500e-6, 650e-6, 800e-6, 1e-3, 1.25e-3, 1.5e-3, 2e-3, 2.5e-3, 3e-3, 4e-3, 5e-3, 7.5e-3,
    10e-3, 15e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1.0, 2.5, 5.0, 10.0,
)
BATCH_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


def start_metrics(port: int, host: str = "127.0.0.1") -> int:
    """Serve /metrics on ``port`` (0 = disabled); returns the port."""
    if port:
        from prometheus_client import start_http_server

        start_http_server(port, addr=host)
    return port


_configured = False


def setup_tracing(service_name: str) -> trace.Tracer:
    """A tracer for ``service_name``; exports over OTLP only when an endpoint is configured."""
    global _configured
    if not _configured and os.environ.get("OTEL_SDK_DISABLED", "").lower() != "true":
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider

        provider = TracerProvider(resource=Resource.create(
            {"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)}))
        if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
        _configured = True
    return trace.get_tracer(service_name)


def inject_metadata() -> list[tuple[str, str]]:
    """The current trace context as gRPC metadata (W3C traceparent/tracestate)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return list(carrier.items())


def extract_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> context.Context:
    """A context continuing the caller's trace from gRPC invocation metadata."""
    carrier = {k: v if isinstance(v, str) else v.decode() for k, v in (metadata or ())}
    return propagate.extract(carrier)
