"""Observability against the real thing: the local stack (redis, feature service, model sidecar,
gateway) scraped by a real Prometheus (Debian's binary) loaded with charts/rtvol/rules, and an
in-process OTLP trace receiver.

* every dashboard panel query and every recording rule returns data, every alert expression
  evaluates; a SIGKILLed sidecar sends RtvolBreakerOpen to pending (its `for:` is minutes, but an
  alert is pending from the first evaluation its expression is true: no test-only override);
* one REST Predict's spans arrive under the caller's trace id: gateway predict -> feature_read and
  -> ModelStreamInfer (client) -> sidecar ModelStreamInfer, each with the right parent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml
from helpers import feed, procs
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as otlp_grpc

from rtvol.loadtest import live_accuracy
from rtvol.loadtest.ticks import StepTicks
from rtvol.proto.v1 import features_pb2 as feature_pb
from rtvol.proto.v1 import features_pb2_grpc as feature_grpc
from rtvol.proto.v1 import signals_pb2 as signals_pb
from rtvol.proto.v1 import signals_pb2_grpc as signals_grpc

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "charts/rtvol/dashboards").glob("*.json"))
RULE_FILES = sorted((ROOT / "charts/rtvol/rules").glob("*.yaml"))
NAMESPACE = "rtvol-it"
RATE_INTERVAL = "1m"  # what $__rate_interval stands for here (scrapes every second)
STOCKS = 4
TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C  # the caller's: the REST request carries it
CALLER_SPAN = 0xB7AD6B7169203331

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None,
                                reason="prometheus not installed (apt-get install prometheus)")


# ---------------------------------------------------------------- OTLP receiver


@dataclass
class Span:
    service: str
    name: str
    trace_id: int
    span_id: int
    parent_id: int


class TraceReceiver(otlp_grpc.TraceServiceServicer):
    """A real OTLP/gRPC TraceService (grpc.aio) on its own thread and event loop."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.port = 0

    async def Export(self, request: otlp.ExportTraceServiceRequest, context: Any
                     ) -> otlp.ExportTraceServiceResponse:
        got = []
        for rs in request.resource_spans:
            service = next((a.value.string_value for a in rs.resource.attributes
                            if a.key == "service.name"), "")
            got += [Span(service, s.name, int.from_bytes(s.trace_id, "big"), int.from_bytes(s.span_id, "big"),
                         int.from_bytes(s.parent_span_id, "big") if s.parent_span_id else 0)
                    for ss in rs.scope_spans for s in ss.spans]
        with self._lock:
            self.spans += got
        return otlp.ExportTraceServiceResponse()

    def start(self) -> None:
        async def serve() -> None:
            self._server = grpc.aio.server()
            otlp_grpc.add_TraceServiceServicer_to_server(self, self._server)
            self.port = self._server.add_insecure_port("127.0.0.1:0")
            await self._server.start()
        self._thread.start()
        asyncio.run_coroutine_threadsafe(serve(), self._loop).result(timeout=10)

    def trace(self, trace_id: int) -> list[Span]:
        with self._lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._server.stop(0), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


# ---------------------------------------------------------------- Prometheus


class Prometheus:
    """Debian's prometheus binary: scrapes the given jobs every second, evaluates the chart's rules
    every second, stores in a temporary directory, answers on a free loopback port."""

    def __init__(self, workdir: Path, targets: dict[str, str], rule_files: list[Path]) -> None:
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
            "rule_files": [str(f) for f in rule_files],
            # the namespace label stands in for what a ServiceMonitor adds in a cluster
            "scrape_configs": [{"job_name": job, "static_configs": [
                {"targets": [target], "labels": {"namespace": NAMESPACE}}]}
                for job, target in targets.items()],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = procs.free_port()
        self.base = f"http://127.0.0.1:{port}"
        binary = shutil.which("prometheus")
        assert binary is not None
        self.proc = procs.Proc("prometheus", [
            binary, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h"],
            workdir / "prometheus.log", procs.http_ready(self.base + "/-/ready"), timeout_s=30)
        self.http = httpx.Client(base_url=self.base, timeout=5)

    def query(self, expr: str) -> list[dict[str, Any]]:
        reply = self.http.get("/api/v1/query", params={"query": expr})
        body = reply.json()
        assert reply.status_code == 200 and body["status"] == "success", f"{expr}: {body}"
        return list(body["data"]["result"])

    def targets_up(self) -> bool:
        return len(self.query("up == 1")) == len(self.query("up"))

    def close(self) -> None:
        self.http.close()
        self.proc.stop(timeout_s=10)


# ---------------------------------------------------------------- stack and traffic


@dataclass
class Traffic:
    """REST predicts from a thread until stopped: half may be answered from the signal cache.
    With ``pipeline``: meanwhile a step-closing update every 50 ms and a Subscribe client on
    the pipeline gateway, so the tick-to-signal panels have data."""

    base: str
    pipeline: tuple[str, str] | None = None  # (feature service, pipeline gateway's gRPC)
    sent: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        threads = [threading.Thread(target=self._predicts, daemon=True)]
        if self.pipeline:
            threads += [threading.Thread(target=self._ticks, daemon=True),
                        threading.Thread(target=self._subscribe, daemon=True)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def _ticks(self) -> None:
        assert self.pipeline
        ticks = StepTicks(STOCKS, start=10**7)  # later than the replayed buckets' steps and sequences

        def messages() -> Iterator[feature_pb.IngestRequest]:
            while not self.stop.wait(0.05):
                yield ticks.message(list(range(STOCKS)))

        with grpc.insecure_channel(self.pipeline[0]) as ch:
            feature_grpc.FeaturesStub(ch).Ingest(messages(), timeout=120)

    def _subscribe(self) -> None:
        assert self.pipeline
        with grpc.insecure_channel(self.pipeline[1]) as ch:
            stub = signals_grpc.SignalsStub(ch)
            stream = stub.Subscribe(signals_pb.SubscribeRequest(all=True), timeout=120)
            for _ in stream:
                if self.stop.is_set():
                    stream.cancel()
                    return

    def _predicts(self) -> None:
        with httpx.Client(base_url=self.base, timeout=5) as client:
            while not self.stop.is_set():
                body: dict[str, Any] = {"stock_ids": list(range(STOCKS))}
                if self.sent % 2:
                    body["max_staleness_ms"] = 60_000
                client.post("/v1/predict", json=body)
                self.sent += 1
                time.sleep(0.01)


@dataclass
class Stack:
    sidecar: procs.Proc
    model_url: str
    feature_url: str
    base: str
    prometheus: Prometheus
    receiver: TraceReceiver
    logs: Path
    grpc: str = ""  # the gateway's gRPC target
    pipeline_grpc: str = ""  # a second gateway's, following the feature service's Watch stream
    data: Path = Path()  # the replayed dataset


@pytest.fixture(scope="module")
def stack(tiny_repo: Path, tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("observability")
    receiver = TraceReceiver()
    receiver.start()
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
           "OTEL_EXPORTER_OTLP_INSECURE": "true", "OTEL_BSP_SCHEDULE_DELAY": "100"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the children inherit it
    started: list[procs.Proc] = []
    try:
        redis = procs.redis(logs)
        started.append(redis)
        feature_metrics, model_metrics = procs.free_port(), procs.free_port()
        feature, feature_url = procs.feature_service(logs, redis.url, STOCKS,
                                                     "--metrics-port", str(feature_metrics))
        started.append(feature)
        sidecar, model_url = procs.sidecar(logs, tiny_repo, "--metrics-port", str(model_metrics))
        started.append(sidecar)
        # the breaker must open for a dead sidecar only: the replays and traffic below load the
        # machine's cores, and a production budget would open it for a slow gateway event loop
        gw, base, grpc_target = procs.gateway(logs, tiny_repo, "--redis-url", redis.url,
                                    "--model-url", model_url, "--stocks", str(STOCKS),
                                    "--breaker-open-s", "0.5", *procs.BUSY_MACHINE_BUDGETS)
        started.append(gw)
        # the tick-to-signal pipeline (in `rtvol up`'s gateway too); this one's Predicts are memory
        # reads, without the feature_read and sidecar spans the trace tests follow
        piped, piped_base, piped_grpc = procs.gateway(
            tmp_path_factory.mktemp("observability-pipeline"), tiny_repo, "--redis-url", redis.url,
            "--model-url", model_url, "--feature-url", feature_url, "--stocks", str(STOCKS),
            *procs.BUSY_MACHINE_BUDGETS)
        started.append(piped)
        feed.replay(feature_url, tiny_data, range(0, 3))
        prometheus = Prometheus(logs, {"gateway": base.removeprefix("http://"),
                                       "gateway-pipeline": piped_base.removeprefix("http://"),
                                       "feature": f"127.0.0.1:{feature_metrics}",
                                       "model": f"127.0.0.1:{model_metrics}"}, RULE_FILES)
        try:
            yield Stack(sidecar, model_url, feature_url, base, prometheus, receiver, logs, grpc_target,
                        piped_grpc, tiny_data)
        finally:
            prometheus.close()
    finally:
        procs.stop_all(started)
        receiver.stop()
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def _induce_errors(s: Stack) -> None:
    """One of each error the dashboards chart, so their series exist."""
    with httpx.Client(base_url=s.base, timeout=5) as client:
        assert client.post("/v1/predict", json={"stock_ids": [STOCKS + 7]}).status_code == 200  # item error
        assert client.post("/v1/predict", json={"stock_ids": "x"}).status_code == 400  # reject
    # ModelInferRequest{model_name: "no_such_model"} as wire bytes (field 1, length-delimited):
    # importing our `inference` stubs here would clash with tritonclient's in this pytest process
    name = b"no_such_model"
    with grpc.insecure_channel(s.model_url) as ch, pytest.raises(grpc.RpcError) as err:
        ch.unary_unary("/inference.GRPCInferenceService/ModelInfer")(
            b"\x0a" + bytes([len(name)]) + name, timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    bad = feature_pb.UpdateColumns(stock_id=[STOCKS + 100], event_time_us=[1], sequence=[1], kind=[0])
    with grpc.insecure_channel(s.feature_url) as ch:
        feature_grpc.FeaturesStub(ch).Ingest(iter([feature_pb.IngestRequest(columns=bad)]), timeout=10)


def _alert_pending(p: Prometheus, name: str) -> bool:
    """Of the gateway the traffic goes to (the pipeline gateway's breaker is not followed)."""
    return bool(p.query(f'ALERTS{{alertname="{name}", alertstate="pending", job!="gateway-pipeline"}}'))


def _panel_queries() -> list[tuple[str, str]]:
    out = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                expr = (target["expr"].replace("$__rate_interval", RATE_INTERVAL)
                        .replace("$namespace", NAMESPACE))
                out.append((f"{path.name}: {panel['title']} [{target['refId']}]", expr))
    return out


def _rules() -> list[dict[str, Any]]:
    return [r for f in RULE_FILES for g in yaml.safe_load(f.read_text())["groups"] for r in g["rules"]]


# ---------------------------------------------------------------- tests


def test_one_predict_is_one_trace_across_gateway_and_sidecar(stack: Stack) -> None:
    headers = {"traceparent": f"00-{TRACE_ID:032x}-{CALLER_SPAN:016x}-01"}
    reply = httpx.post(stack.base + "/v1/predict", json={"stock_ids": [0, 1]}, headers=headers, timeout=5)
    assert reply.status_code == 200 and all(s["tier"] == 1 for s in reply.json()["signals"]), reply.text

    def complete() -> bool:
        names = {(s.service, s.name) for s in stack.receiver.trace(TRACE_ID)}
        return {("rtvol-gateway", "predict"), ("rtvol-gateway", "feature_read"),
                ("rtvol-gateway", "ModelStreamInfer"), ("rtvol-model", "ModelStreamInfer")} <= names
    assert procs.wait_until(complete, 15, 0.1), stack.receiver.trace(TRACE_ID)

    got = stack.receiver.trace(TRACE_ID)
    spans = {(s.service, s.name): s for s in got}
    predict = spans["rtvol-gateway", "predict"]
    client = spans["rtvol-gateway", "ModelStreamInfer"]
    # W3C headers over HTTP: predict sits under the gateway's HTTP server spans (FastAPI's own
    # telemetry), whose root is a child of the caller's span
    by_id = {s.span_id: s for s in got}
    up = predict
    for _ in range(len(got)):
        if up.parent_id not in by_id:
            break
        up = by_id[up.parent_id]
    assert (up.service, up.parent_id) == ("rtvol-gateway", CALLER_SPAN), got
    assert spans["rtvol-gateway", "feature_read"].parent_id == predict.span_id
    assert client.parent_id == predict.span_id
    # the per-request traceparent parameter on the long-lived stream
    assert spans["rtvol-model", "ModelStreamInfer"].parent_id == client.span_id


def test_each_predict_stream_request_is_its_own_span_under_its_callers_context(stack: Stack) -> None:
    """One PredictStream: a request without a traceparent of its own continues the stream's
    metadata (whoever opened it); one with a traceparent continues that; each gets its own
    predict span, with its feature read and sidecar call under it."""
    from rtvol.proto.v1 import signals_pb2 as pb
    from rtvol.proto.v1 import signals_pb2_grpc as pb_grpc

    opener = (0x1AF7651916CD43DD8448EB211C80319C, 0x17AD6B7169203331)
    per_message = (0x2AF7651916CD43DD8448EB211C80319C, 0x27AD6B7169203331)

    def traceparent(ids: tuple[int, int]) -> str:
        return f"00-{ids[0]:032x}-{ids[1]:016x}-01"

    requests = [pb.PredictRequest(stock_ids=[0], request_id="a"),
                pb.PredictRequest(stock_ids=[1], request_id="b", traceparent=traceparent(per_message)),
                pb.PredictRequest(stock_ids=[2], request_id="c")]
    with grpc.insecure_channel(stack.grpc) as ch:
        answers = list(pb_grpc.SignalsStub(ch).PredictStream(
            iter(requests), metadata=[("traceparent", traceparent(opener))], timeout=10))
    assert [a.request_id for a in answers] == ["a", "b", "c"]
    assert all(a.signals[0].tier == 1 for a in answers), answers

    def spans(trace_id: int, name: str, service: str = "rtvol-gateway") -> list[Span]:
        return [s for s in stack.receiver.trace(trace_id) if (s.service, s.name) == (service, name)]

    def complete() -> bool:  # each process exports on its own schedule: wait for both
        return (len(spans(opener[0], "ModelStreamInfer", "rtvol-model")) >= 2
                and len(spans(per_message[0], "ModelStreamInfer", "rtvol-model")) >= 1
                and len(spans(opener[0], "predict")) >= 2 and len(spans(per_message[0], "predict")) >= 1)
    assert procs.wait_until(complete, 15, 0.1), stack.receiver.trace(opener[0])

    for (trace_id, caller), requests_in_trace in ((opener, 2), (per_message, 1)):
        predicts = spans(trace_id, "predict")
        assert len(predicts) == requests_in_trace  # one span per request, not one per stream
        assert all(p.parent_id == caller for p in predicts)
        for predict in predicts:
            assert [s for s in spans(trace_id, "feature_read") if s.parent_id == predict.span_id]
            (client,) = [s for s in spans(trace_id, "ModelStreamInfer") if s.parent_id == predict.span_id]
            assert [s for s in spans(trace_id, "ModelStreamInfer", "rtvol-model")
                    if s.parent_id == client.span_id]


def test_prometheus_sees_every_panel_rule_and_alert(stack: Stack) -> None:
    p = stack.prometheus
    assert procs.wait_until(p.targets_up, 15, 0.2), p.query("up")
    # more buckets, each one's signals served: live scoring while Prometheus watches (the
    # scored-signal series exists at 0 from a bucket's first signal, before any is scored)
    live_accuracy.replay(stack.feature_url, stack.pipeline_grpc, stack.data, range(3, 4))
    assert procs.wait_until(lambda: bool(p.query("rtvol_live_scored_signals_total")), 10, 0.2)
    live_accuracy.replay(stack.feature_url, stack.pipeline_grpc, stack.data, range(4, 8))
    traffic = Traffic(stack.base, (stack.feature_url, stack.pipeline_grpc))
    thread = threading.Thread(target=traffic.run, daemon=True)
    thread.start()
    try:
        assert procs.wait_until(lambda: bool(p.query(
            'service:rtvol_request_duration_seconds:p99_1m{service="gateway"} > 0')), 15, 0.5)
        assert not _alert_pending(p, "RtvolBreakerOpen")

        stack.sidecar.kill()  # SIGKILL while traffic continues
        assert procs.wait_until(lambda: _alert_pending(p, "RtvolBreakerOpen"), 20, 0.5), \
            p.query("rtvol_gateway_breaker_state")
        (alert,) = p.query('ALERTS{alertname="RtvolBreakerOpen", job="gateway"}')
        assert alert["metric"]["upstream"] == "sidecar"

        stack.sidecar.restart()  # same port: the gateway reconnects and its breaker closes
        assert procs.wait_until(lambda: bool(p.query(
            'rtvol_gateway_breaker_state{upstream="sidecar"} == 0 and on() up{job="model"} == 1')), 20, 0.5)
        _induce_errors(stack)
        # two scrapes of the restarted sidecar and of the induced errors, then a rule evaluation
        time.sleep(3)
        empty = [name for name, expr in _panel_queries() if not p.query(expr)]
        assert not empty, f"panels without data: {empty}"
        for rule in _rules():
            if "record" in rule:
                assert p.query(rule["expr"]), f"recording rule {rule['record']}: no data"
                assert p.query(rule["record"]), f"{rule['record']}: not recorded"
            else:
                p.query(rule["expr"])  # evaluates without error (asserted in query)
    finally:
        traffic.stop.set()
        thread.join(timeout=10)
    assert traffic.sent > 50


# ---------------------------------------------------------------- overhead


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    """Children started inside inherit ``values``; the test process gets its own back."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _p50_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


@pytest.mark.bench  # a performance target: run on demand (`pytest -m bench`), not in `make test`
def test_tracing_overhead_is_at_most_10_percent_of_the_gateway_p50(
        tiny_repo: Path, tiny_data: Path, tmp_path: Path) -> None:
    """Two sidecar+gateway pairs over one Redis, tracing on (exporting to a real OTLP receiver)
    and off (OTEL_SDK_DISABLED), both with their Prometheus metrics; REST predicts alternate
    between them in rounds (order swapped every round) so machine noise hits both alike."""
    rounds, per_round = 10, 200
    receiver = TraceReceiver()
    receiver.start()
    started: list[procs.Proc] = []
    bases: dict[str, str] = {}
    try:
        redis = procs.redis(tmp_path)
        started.append(redis)
        feature, feature_url = procs.feature_service(tmp_path, redis.url, STOCKS)
        started.append(feature)
        feed.replay(feature_url, tiny_data, range(0, 3))
        traced = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
                  "OTEL_EXPORTER_OTLP_INSECURE": "true", "OTEL_SDK_DISABLED": "false"}
        for name, env in (("on", traced), ("off", {"OTEL_SDK_DISABLED": "true"})):
            (tmp_path / name).mkdir()
            with _environment(**env):
                sidecar, model_url = procs.sidecar(tmp_path / name, tiny_repo)
                started.append(sidecar)
                gw, bases[name], _ = procs.gateway(tmp_path / name, tiny_repo, "--redis-url", redis.url,
                                                   "--model-url", model_url, "--stocks", str(STOCKS))
                started.append(gw)
        samples: dict[str, list[float]] = {"on": [], "off": []}
        clients = {name: httpx.Client(base_url=base, timeout=5) for name, base in bases.items()}
        body = {"stock_ids": list(range(STOCKS))}
        try:
            for client in clients.values():  # warm-up: streams open, caches filled
                for _ in range(50):
                    client.post("/v1/predict", json=body)
            for r in range(rounds):
                for name in (("on", "off") if r % 2 else ("off", "on")):
                    for _ in range(per_round):
                        t0 = time.perf_counter()
                        reply = clients[name].post("/v1/predict", json=body)
                        samples[name].append(time.perf_counter() - t0)
                        assert reply.status_code == 200
        finally:
            for client in clients.values():
                client.close()
        assert receiver.spans, "the traced gateway exported nothing"
    finally:
        procs.stop_all(started)
        receiver.stop()
    on, off = _p50_us(samples["on"]), _p50_us(samples["off"])
    print(f"\ngateway REST predict p50: tracing on {on:.0f} µs, off {off:.0f} µs, "
          f"overhead {100 * (on / off - 1):+.1f}% ({rounds} x {per_round} requests each)")
    assert on <= 1.10 * off
