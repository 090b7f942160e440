"""rtvol.telemetry.bootstrap: tracing on or off from the standard OTEL_* settings, the metrics
server and the log format, as every service's ``main`` sets them up."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from opentelemetry import trace

from rtvol import telemetry
from rtvol.localproc import free_port

ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}


@pytest.mark.parametrize(("env", "on"), [
    ({}, False),  # the SDK default would send to localhost:4317: nothing configured, nothing sent
    (ENDPOINT, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"}, True),
    ({**ENDPOINT, "OTEL_SDK_DISABLED": "true"}, False),
    ({**ENDPOINT, "OTEL_SDK_DISABLED": "TRUE "}, False),
    ({**ENDPOINT, "OTEL_SDK_DISABLED": "false"}, True),
    ({**ENDPOINT, "OTEL_TRACES_EXPORTER": "none"}, False),
    ({**ENDPOINT, "OTEL_TRACES_EXPORTER": "otlp,none"}, False),
    ({"OTEL_TRACES_EXPORTER": "otlp"}, True),  # asked for by name: the SDK's default endpoint
    ({"OTEL_TRACES_EXPORTER": "console"}, True),
    ({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}, False),
])
def test_tracing_on_or_off_from_the_otel_settings(env: dict[str, str], on: bool) -> None:
    assert telemetry.exports_traces(env) is on


def test_off_means_a_no_op_tracer(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("OTEL_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    tracer = telemetry.tracer("rtvol-test")
    assert isinstance(tracer, trace.NoOpTracer)
    assert not telemetry.traced(tracer)
    with tracer.start_as_current_span("predict") as span:
        assert not span.is_recording()


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env={**clean, **env},
                          capture_output=True, text=True, timeout=60)


def test_bootstrap_sets_up_logging_metrics_and_exported_spans() -> None:
    """In a fresh process, as a service's main: the console exporter receives the span under
    the service name, /metrics answers on the given port, log lines carry the shared format."""
    port = free_port()
    out = _run(f"""
        import logging, urllib.request
        from opentelemetry import trace
        from rtvol import telemetry
        telemetry.bootstrap("rtvol-test", "INFO", [("127.0.0.1", 0), ("127.0.0.1", {port})])
        logging.getLogger("rtvol.test").info("hello")
        tracer = telemetry.tracer("rtvol-test")
        assert telemetry.traced(tracer)
        with tracer.start_as_current_span("predict"):
            pass
        trace.get_tracer_provider().force_flush()
        body = urllib.request.urlopen("http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        print("METRICS", "rtvol_gc_pause_seconds_bucket" in body)
        """, OTEL_TRACES_EXPORTER="console")
    assert out.returncode == 0, out.stderr
    assert "METRICS True" in out.stdout
    assert '"name": "predict"' in out.stdout and '"service.name": "rtvol-test"' in out.stdout
    assert " INFO rtvol.test: hello" in out.stderr


def test_otel_service_name_wins_and_off_installs_no_sdk() -> None:
    out = _run("""
        import sys
        from opentelemetry import trace
        from rtvol import telemetry
        telemetry.bootstrap("rtvol-test", "INFO")
        print("SDK", "opentelemetry.sdk.trace" in sys.modules, type(trace.get_tracer_provider()).__name__)
        """, OTEL_SDK_DISABLED="true", OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4317")
    assert out.returncode == 0, out.stderr
    assert "SDK False" in out.stdout
    named = _run("""
        from opentelemetry import trace
        from rtvol import telemetry
        telemetry.bootstrap("rtvol-test", "INFO")
        print("NAME", trace.get_tracer_provider().resource.attributes["service.name"])
        """, OTEL_TRACES_EXPORTER="console", OTEL_SERVICE_NAME="gw-eu-1")
    assert "NAME gw-eu-1" in named.stdout, named.stderr


def test_an_unknown_exporter_is_one_clear_line() -> None:
    out = _run("""
        from rtvol import telemetry
        telemetry.bootstrap("rtvol-test", "INFO")
        """, OTEL_TRACES_EXPORTER="zipkin")
    assert out.returncode == 1
    assert out.stderr.strip() == "OTEL_TRACES_EXPORTER: 'zipkin' is not one of otlp, console, none"
