"""Metrics, tracing and logging: one bootstrap for every service.

* `bootstrap` runs once per process, from each service's ``main``: the logging format, the
  Prometheus /metrics server(s) and, when traces are exported, the OpenTelemetry SDK.
* Prometheus: LATENCY_BUCKETS resolve 10 µs; `start_metrics` serves /metrics and installs the
  runtime metrics: prometheus_client's default process/platform/GC collectors (RSS, CPU,
  collections per generation) plus `rtvol_gc_pause_seconds{generation}` from `gc.callbacks`.
* `observe_many` records a batch of observations into a histogram at the cost of a few: a
  pipeline batch observes hundreds at once, and prometheus_client's `observe` scans the 35
  LATENCY_BUCKETS one by one for each.
* `LoopLag` samples how late an asyncio event loop runs a timer (`rtvol_event_loop_lag_seconds`):
  what a request that became ready at that moment waited before the loop got to it.
* `after_warmup` runs once a service is warm: one full collection, then optionally
  `gc.freeze()` so the long-lived warm-up objects are never scanned again.
* OpenTelemetry: `exports_traces` decides from the standard OTEL_* variables whether spans
  go anywhere; `tracer` gives a component an SDK tracer then, else a no-op one, so a hot path
  pays ~1 µs per span instead of tens when tracing is off. W3C trace context travels in gRPC
  metadata (`inject_metadata` / `extract_metadata`), HTTP headers (`inject_headers` /
  `extract_headers`) and single values such as an Open Inference Protocol request parameter
  on a long-lived stream (`traceparent` / `extract_traceparent`).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from typing import TYPE_CHECKING

import numpy as np
from opentelemetry import context, propagate, trace
from prometheus_client import CollectorRegistry, Gauge, Histogram

if TYPE_CHECKING:
    from rtvol.tls import ServerTLS

# seconds; fine below 1 ms (the model runs in tens of µs), coarse above
LATENCY_BUCKETS: tuple[float, ...] = (
    10e-6, 20e-6, 30e-6, 40e-6, 50e-6, 75e-6, 100e-6, 150e-6, 200e-6, 250e-6, 300e-6, 400e-6,
    500e-6, 650e-6, 800e-6, 1e-3, 1.25e-3, 1.5e-3, 2e-3, 2.5e-3, 3e-3, 4e-3, 5e-3, 7.5e-3,
    10e-3, 15e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1.0, 2.5, 5.0, 10.0,
)
BATCH_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)

# below this many observations one by one costs less than the array work
_MANY = 8


def observe_many(histogram: Histogram, amounts: np.ndarray) -> None:
    """``histogram.observe(a)`` for each of the finite ``amounts``, as one increment per bucket
    that got any (prometheus_client keeps no public batch form; its bucket values are what
    ``observe`` increments, pinned in constraints.txt and checked by tests/unit/test_telemetry_runtime.py)."""
    if len(amounts) < _MANY:
        for amount in amounts.tolist():
            histogram.observe(amount)
        return
    histogram._raise_if_not_observable()
    bounds = histogram._upper_bounds  # ascending, the last +inf: every finite amount has a bucket
    counts = np.bincount(np.searchsorted(bounds, amounts, side="left"), minlength=len(bounds))
    histogram._sum.inc(float(amounts.sum()))
    for i in np.flatnonzero(counts).tolist():
        histogram._buckets[i].inc(int(counts[i]))


# GC pauses run from ~10 µs (generation 0) to tens of ms (a full collection of a big heap)
GC_PAUSE = Histogram("rtvol_gc_pause_seconds", "Stop-the-world time of one garbage collection",
                     ["generation"], buckets=LATENCY_BUCKETS)
GC_FROZEN = Gauge("rtvol_gc_frozen_objects", "Objects moved to the permanent generation by gc.freeze()",
                  multiprocess_mode="livesum")  # the workers of one gateway together


class GcPauseTimer:
    """A ``gc.callbacks`` hook timing each collection into GC_PAUSE.

    The callback runs inside the collector, which may start on any allocation, including one
    prometheus-client makes while it holds its value lock (in multiprocess mode ONE lock for
    every value of the process; creating a labelled child allocates under it). Observing
    there takes that lock again on the same thread: a deadlock (a restarted gateway worker
    hung so before it listened). So the callback only queues the pause; ``flush``, on a
    thread of its own every FLUSH_S, observes them."""

    FLUSH_S = 1.0

    def __init__(self) -> None:
        self._children = [GC_PAUSE.labels(str(g)) for g in range(3)]  # looked up once
        self._started = 0.0
        self._pauses: deque[tuple[int, float]] = deque(maxlen=100_000)  # append/popleft: no lock

    def __call__(self, phase: str, info: Mapping[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started:
            self._pauses.append((info["generation"], time.perf_counter() - self._started))
            self._started = 0.0

    def flush(self) -> None:
        """Observe the pauses queued since the last flush."""
        while self._pauses:
            generation, seconds = self._pauses.popleft()
            self._children[generation].observe(seconds)

    def flush_forever(self) -> None:
        while True:
            time.sleep(self.FLUSH_S)
            self.flush()


# a timer's lateness: ~0-1 ms on an idle loop (epoll waits in whole ms), a stall's length on a busy one
LOOP_LAG = Histogram("rtvol_event_loop_lag_seconds", "How late the event loop ran a timer due every "
                     "LoopLag.interval: what a request ready then waited for the loop (GC pauses, long "
                     "callbacks, the scheduler giving the core away); up to 1 ms of it is epoll's "
                     "millisecond timeout when the loop was idle", buckets=LATENCY_BUCKETS)


class LoopLag:
    """A timer on the running loop every ``interval_s`` that records how late it ran: one
    histogram observation per tick (20 a second, a few µs each), nothing on the request path.
    Why not more often: each tick wakes an idle process (at 100 a second an idle gateway worker
    used 3.0 % of a core, 1.8 % at 20, the 2-core VM), and sixteen workers idle as much as they
    serve; a stall still shows in the samples that land in it."""

    def __init__(self, interval_s: float = 0.05, observe: Callable[[float], None] = LOOP_LAG.observe) -> None:
        self.interval_s, self.observe = interval_s, observe
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._arm()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _arm(self) -> None:
        assert self._loop is not None
        self._due = self._loop.time() + self.interval_s
        self._handle = self._loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        assert self._loop is not None
        self.observe(max(0.0, self._loop.time() - self._due))
        self._arm()


_gc_timer: GcPauseTimer | None = None


def install_runtime_metrics() -> None:
    """Time GC pauses (once per process); the default registry already carries process_*
    (RSS, CPU, fds) and python_gc_* (collections per generation) collectors."""
    global _gc_timer
    if _gc_timer is None:
        _gc_timer = GcPauseTimer()
        gc.callbacks.append(_gc_timer)
        threading.Thread(target=_gc_timer.flush_forever, name="gc-pause-flush", daemon=True).start()


def flush_gc_pauses() -> None:
    """Observe the GC pauses queued so far now (tests; the flush thread does it every second)."""
    if _gc_timer is not None:
        _gc_timer.flush()


def after_warmup(freeze: bool) -> int:
    """Call once warm (models loaded, connections open): collect what warm-up left behind and,
    when ``freeze``, move the survivors to the permanent generation so later collections skip
    them (shorter pauses). Returns the frozen object count."""
    gc.collect()
    if freeze:
        gc.freeze()
    frozen = gc.get_freeze_count()
    GC_FROZEN.set(frozen)
    return frozen


def start_metrics(port: int, host: str = "127.0.0.1", tls: ServerTLS | None = None) -> int:
    """Install the runtime metrics and serve /metrics on ``port`` (0: the service exposes the
    default registry itself, e.g. on its HTTP port); returns the port. ``tls``: HTTPS only,
    following certificate rotation."""
    install_runtime_metrics()
    if port:
        serve_metrics(port, host, tls)
    return port


def serve_metrics(port: int, host: str, tls: ServerTLS | None = None,
                  registry: CollectorRegistry | None = None) -> None:
    """/metrics of ``registry`` (default: the process's) on ``port``; HTTPS with ``tls``,
    following certificate rotation."""
    from prometheus_client import REGISTRY, start_http_server

    httpd, _ = start_http_server(port, addr=host, registry=registry or REGISTRY,
                                 **(tls.prometheus() if tls else {}))
    if tls:
        tls.follow(httpd.socket.context)  # type: ignore[attr-defined]


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def bootstrap(service_name: str, log_level: str, metrics: Iterable[tuple[str, int]] = (),
              tls: ServerTLS | None = None) -> None:
    """Once per process, before serving: log lines in LOG_FORMAT at ``log_level``, /metrics on
    each (host, port) of ``metrics`` whose port is not 0 (the runtime metrics in any case; HTTPS
    with ``tls``, see start_metrics), and the tracer provider when traces are exported
    (``service_name`` unless OTEL_SERVICE_NAME)."""
    logging.basicConfig(level=log_level, format=LOG_FORMAT)
    install_runtime_metrics()
    for host, port in metrics:
        start_metrics(port, host, tls)
    if exports_traces():
        _install_provider(service_name)


def exports_traces(env: Mapping[str, str] = os.environ) -> bool:
    """Whether spans are exported, from the standard settings: never with
    OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none; with OTEL_TRACES_EXPORTER=otlp or
    console; otherwise (the exporter left at its default) only when an OTLP endpoint is
    configured. The SDK's default would export to localhost:4317 where usually nothing listens,
    and a span that goes nowhere is pure cost on a request path."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = _exporters(env)
    if exporters is not None:
        return bool(exporters)
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def _exporters(env: Mapping[str, str]) -> list[str] | None:
    """OTEL_TRACES_EXPORTER as a list (``none`` is the empty list), None when unset."""
    raw = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if not raw:
        return None
    names = [n.strip() for n in raw.split(",") if n.strip()]
    return [] if "none" in names else names


def tracer(name: str) -> trace.Tracer:
    """A component's tracer: the SDK's when `exports_traces`, else a no-op tracer."""
    if not exports_traces():
        return trace.NoOpTracer()
    _install_provider(name)  # a no-op after `bootstrap`; here for code run without it (benchmarks)
    return trace.get_tracer(name)


def traced(tracer: trace.Tracer) -> bool:
    """Whether ``tracer``'s spans go anywhere: hot paths skip extracting trace context when not."""
    return not isinstance(tracer, trace.NoOpTracer)


_provider_installed = False


def _install_provider(service_name: str) -> None:
    """The global tracer provider, once per process: OTLP over gRPC (endpoint, headers and
    batching from the OTEL_* variables) and/or the console, as OTEL_TRACES_EXPORTER names."""
    global _provider_installed
    if _provider_installed:
        return
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    provider = TracerProvider(resource=Resource.create(
        {"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)}))
    for name in _exporters(os.environ) or ["otlp"]:
        exporter: SpanExporter
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()
        elif name == "console":
            exporter = ConsoleSpanExporter()
        else:  # a setting error: one clear line at start, not a traceback
            raise SystemExit(f"OTEL_TRACES_EXPORTER: {name!r} is not one of otlp, console, none")
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _provider_installed = True


def inject_metadata() -> list[tuple[str, str]]:
    """The current trace context as gRPC metadata (W3C traceparent/tracestate)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return list(carrier.items())


def inject_headers(headers: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Add the current trace context to outgoing HTTP ``headers`` (W3C traceparent/tracestate)."""
    propagate.inject(headers)
    return headers


def traceparent() -> str:
    """The current span's W3C traceparent ('' outside a recording span): for carriers that are
    one value, e.g. a request parameter on a stream opened long before this request."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent", "")


def extract_traceparent(value: str, default: context.Context | None = None) -> context.Context | None:
    """A context continuing ``value`` (a traceparent), or ``default`` when it is empty."""
    return propagate.extract({"traceparent": value}) if value else default


def extract_headers(headers: Mapping[str, str]) -> context.Context:
    """A context continuing the trace named by incoming HTTP ``headers`` (for servers whose own
    instrumentation is off, like the gateway's FastAPI app)."""
    return propagate.extract({k.lower(): v for k, v in headers.items()})


def extract_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> context.Context:
    """A context continuing the caller's trace from gRPC invocation metadata."""
    carrier = {k: v if isinstance(v, str) else v.decode() for k, v in (metadata or ())}
    return propagate.extract(carrier)
