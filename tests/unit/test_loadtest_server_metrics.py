"""loadtest/server_metrics.py: a run's server histograms as the difference of two scrapes."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from rtvol.loadtest import server_metrics


def test_the_run_is_the_difference_of_two_scrapes_summed_over_series() -> None:
    registry = CollectorRegistry()
    handler = Histogram("rtvol_gateway_request_seconds", "", ["route"], buckets=(0.001, 0.01, 0.1),
                        registry=registry)
    lag = Histogram("rtvol_event_loop_lag_seconds", "", buckets=(0.001, 0.01, 0.1), registry=registry)
    opened = Counter("rtvol_gateway_http_connections_total", "", registry=registry)
    opened.inc(3)
    handler.labels("grpc").observe(0.05)  # before the run: not in it
    before = server_metrics.parse(generate_latest(registry).decode())
    for _ in range(98):
        handler.labels("rest").observe(0.0005)
    handler.labels("grpc").observe(0.005)
    handler.labels("grpc").observe(0.05)
    lag.observe(0.2)
    opened.inc(2)
    run = server_metrics.delta(before, server_metrics.parse(generate_latest(registry).decode()))
    assert run["handler"]["count"] == 100
    assert run["handler"]["p50_ms"] == 1.0 and run["handler"]["p99_ms"] == 10.0
    assert run["handler"]["p99.9_ms"] == 100.0
    assert run["loop lag"]["count"] == 1 and run["loop lag"]["p50_ms"] == float("inf")
    assert run["GC pause"] == {"count": 0, "total_s": 0.0, "p50_ms": 0.0, "p99_ms": 0.0, "p99.9_ms": 0.0}
    assert run["HTTP connections accepted"] == {"count": 2}
    text = server_metrics.line(run)
    assert "handler: 100" in text and "HTTP connections accepted: 2" in text
