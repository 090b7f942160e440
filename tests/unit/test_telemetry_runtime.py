"""rtvol.telemetry: runtime metrics (GC pauses, process collectors), gc.freeze after warm-up,
W3C trace context over HTTP headers and single-value carriers, histograms observed in bulk."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import REGISTRY, CollectorRegistry, Histogram, generate_latest

from rtvol import telemetry


def _pauses(generation: int) -> float:
    value = REGISTRY.get_sample_value("rtvol_gc_pause_seconds_count", {"generation": str(generation)})
    return value or 0.0


def test_gc_pauses_are_timed_per_generation() -> None:
    telemetry.install_runtime_metrics()
    telemetry.install_runtime_metrics()  # idempotent: one callback, not two
    assert sum(isinstance(cb, telemetry.GcPauseTimer) for cb in gc.callbacks) == 1
    # only the two collections below: none started by an allocation meanwhile, none queued before
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        telemetry.flush_gc_pauses()
        before = [_pauses(g) for g in range(3)]
        gc.collect(1)
        gc.collect(2)
        telemetry.flush_gc_pauses()  # queued by the callback, observed outside the collector
    finally:
        if was_enabled:  # leave the collector as the session had it
            gc.enable()
    assert _pauses(1) == before[1] + 1
    assert _pauses(2) == before[2] + 1
    total = REGISTRY.get_sample_value("rtvol_gc_pause_seconds_sum", {"generation": "2"})
    assert total is not None and total > 0


# a collection on every allocation, while labelled children are created: in multiprocess mode
# prometheus-client allocates under its one value lock, so an observe from the GC callback
# took that lock again on the same thread and hung (a restarted gateway worker, before it
# listened: tests/integration/test_gateway_workers.py)
_GC_INSIDE_THE_LOCK = """
import gc, os
from rtvol import telemetry
telemetry.install_runtime_metrics()
from prometheus_client import Gauge
gauge = Gauge("rtvol_unit_gc_lock", "unit", ["n"], multiprocess_mode="livesum")
gc.set_threshold(1)
for n in range(200):
    gauge.labels(str(n)).set(n)
gc.set_threshold(700)
telemetry.flush_gc_pauses()
print("done")
"""


def test_a_collection_inside_prometheus_clients_lock_does_not_hang(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", _GC_INSIDE_THE_LOCK], env=env, capture_output=True,
                          text=True, timeout=20)
    assert done.returncode == 0 and done.stdout.strip() == "done", done.stderr
    assert list(tmp_path.glob("histogram_*.db"))  # the pauses were observed (into the shared files)


def test_start_metrics_without_port_still_exposes_runtime_metrics() -> None:
    assert telemetry.start_metrics(0) == 0
    text = generate_latest().decode()
    for name in ("process_resident_memory_bytes", "process_cpu_seconds_total",
                 'python_gc_collections_total{generation="2"}', "rtvol_gc_pause_seconds_bucket",
                 "rtvol_gc_frozen_objects"):
        assert name in text, name


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


@pytest.mark.usefixtures("unfrozen")
def test_after_warmup_freezes_only_when_asked() -> None:
    assert telemetry.after_warmup(False) == 0
    assert gc.get_freeze_count() == 0
    frozen = telemetry.after_warmup(True)
    assert frozen == gc.get_freeze_count() > 0
    assert REGISTRY.get_sample_value("rtvol_gc_frozen_objects") == frozen


@pytest.fixture(scope="module")
def tracer() -> trace.Tracer:
    # a local provider: the global one can be set only once per process
    return TracerProvider().get_tracer("test")


def test_traceparent_round_trips_through_one_value(tracer: trace.Tracer) -> None:
    assert telemetry.traceparent() == ""  # no span: nothing to send
    default = telemetry.extract_metadata(())
    assert telemetry.extract_traceparent("", default) is default
    with tracer.start_as_current_span("client") as span:
        value = telemetry.traceparent()
    ctx = telemetry.extract_traceparent(value)
    assert ctx is not None
    remote = trace.get_current_span(ctx).get_span_context()
    assert (remote.trace_id, remote.span_id) == (span.get_span_context().trace_id,
                                                 span.get_span_context().span_id)
    assert remote.is_remote


def test_http_headers_carry_the_trace(tracer: trace.Tracer) -> None:
    with tracer.start_as_current_span("caller") as caller:
        headers = dict(telemetry.inject_headers({"Accept": "application/json"}))
    assert headers["traceparent"].startswith("00-") and headers["Accept"] == "application/json"
    # header names are case-insensitive on the wire
    ctx = telemetry.extract_headers({k.title(): v for k, v in headers.items()})
    remote = trace.get_current_span(ctx).get_span_context()
    assert remote.trace_id == caller.get_span_context().trace_id
    assert remote.span_id == caller.get_span_context().span_id
    assert not trace.get_current_span(telemetry.extract_headers({})).get_span_context().is_valid


async def test_loop_lag_records_how_long_the_loop_was_held() -> None:
    import asyncio
    import time

    seen: list[float] = []
    lag = telemetry.LoopLag(0.005, seen.append)
    lag.start()
    await asyncio.sleep(0.02)  # an idle loop: timers run about on time (epoll waits in whole ms)
    assert seen and max(seen) < 0.02
    time.sleep(0.05)  # a callback holding the loop, as a long GC pause would
    await asyncio.sleep(0.02)
    lag.stop()
    assert max(seen) >= 0.04
    count = len(seen)
    await asyncio.sleep(0.02)
    assert len(seen) == count  # stopped


@pytest.mark.parametrize("n", [0, 3, 500])
def test_observe_many_equals_observing_one_by_one(n: int) -> None:
    rng = np.random.default_rng(n)
    bounds = np.asarray(telemetry.LATENCY_BUCKETS)
    # exact bucket bounds (le is inclusive), zero, above the last bound, and spread values
    amounts = np.concatenate([bounds, [0.0, 11.0, 1e9], rng.lognormal(-7, 2, 600)])[:n]
    registry = CollectorRegistry()
    one, many = (Histogram(name, "t", ["stage"], buckets=telemetry.LATENCY_BUCKETS, registry=registry)
                 for name in ("one", "many"))
    one_x = one.labels("x")
    for a in amounts.tolist():
        one_x.observe(a)
    telemetry.observe_many(many.labels("x"), amounts)

    def samples(name: str) -> dict[str, float]:
        return {s.name.removeprefix(name) + str(s.labels.get("le", "")): s.value
                for metric in registry.collect() if metric.name == name
                for s in metric.samples if not s.name.endswith("_created")}
    assert samples("many") == pytest.approx(samples("one"))
    assert samples("many")["_count"] == n
