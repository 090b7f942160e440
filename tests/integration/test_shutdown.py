"""SIGTERM under load always ends: the gateway, the model sidecar and the feature service
each exit, with code 0, within their drain time plus one second, cycle after cycle
(issue 16: 2 of 19 gateway shutdowns hung). Load: REST and unary gRPC Predict, an open
PredictStream and a Subscribe stream on the gateway; ModelStreamInfer on the sidecar;
Ingest and GetFeatures on the feature service."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from helpers import feed, load, procs

# tritonclient's copy of the inference protos, as tests/integration/test_sidecar_grpc.py: the
# two copies share the proto package 'inference', and only one can come first in a process
from tritonclient.grpc import service_pb2 as infer_pb
from tritonclient.grpc import service_pb2_grpc as infer_grpc

from rtvol.features.spec import N_FEATURES, STEPS
from rtvol.proto.v1 import features_pb2 as fpb
from rtvol.proto.v1 import features_pb2_grpc as fpb_grpc
from rtvol.proto.v1 import signals_pb2 as pb
from rtvol.proto.v1 import signals_pb2_grpc as pb_grpc

pytestmark = [pytest.mark.integration, pytest.mark.slow]
STOCKS = 8
DRAIN_S = 1.0
LIMIT_S = DRAIN_S + 1.0  # the promise: the drain, plus one second for everything else
Call = Callable[[load.Load], None]


@pytest.fixture(scope="module")
def upstreams(redis_db: str, tiny_repo: Path, tiny_data: Path,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A fed feature service and a sidecar for the gateway cycles: (feature target, model target)."""
    logs = tmp_path_factory.mktemp("shutdown")
    started: list[procs.Proc] = []
    try:
        feature_url, model_url = procs.upstreams(logs, redis_db, tiny_repo, STOCKS, started)
        feed.replay(feature_url, tiny_data, range(0, 3))
        yield feature_url, model_url
    finally:
        procs.stop_all(started)


Started = tuple[procs.Proc, str, Callable[[grpc.Channel], list[Call]]]


def _cycles(n: int, start: Callable[[], Started]) -> list[float]:
    """``n`` times: start a process (it, its gRPC target, the load for a channel to it),
    load it, SIGTERM it; each exit must be clean (code 0) and within LIMIT_S."""
    times = []
    for cycle in range(n):
        proc, target, calls = start()
        try:
            with grpc.insecure_channel(target) as channel, load.running(*calls(channel)) as busy:
                busy.wait_busy(20)
                t0 = time.monotonic()
                code = proc.stop(timeout_s=LIMIT_S + 5)  # SIGKILL only well past the promise
                times.append(time.monotonic() - t0)
        finally:
            proc.kill()
        where = f"cycle {cycle}: {proc.name}"
        assert code == 0, f"{where} exited {code} after SIGTERM:\n{proc.tail()}"
        assert times[-1] <= LIMIT_S, f"{where} took {times[-1]:.2f} s (drain {DRAIN_S} s):\n{proc.tail()}"
    print(f"\nSIGTERM to exit, {n} cycles: max {max(times):.2f} s, median {np.median(times):.2f} s")
    return times


def _gateway_calls(base: str) -> Callable[[grpc.Channel], list[Call]]:
    http = httpx.Client(base_url=base, timeout=2)
    ids = list(range(STOCKS))

    def calls(channel: grpc.Channel) -> list[Call]:
        stub = pb_grpc.SignalsStub(channel)

        def rest(busy: load.Load) -> None:
            http.post("/v1/predict", json={"stock_ids": ids}).raise_for_status()
            busy.answered()

        def unary(busy: load.Load) -> None:
            stub.Predict(pb.PredictRequest(stock_ids=ids), timeout=2)
            busy.answered()

        def stream(busy: load.Load) -> None:
            def requests() -> Iterator[pb.PredictRequest]:
                while not busy.done.is_set():
                    yield pb.PredictRequest(stock_ids=ids)
            for _ in stub.PredictStream(requests()):
                busy.answered()

        def subscribe(busy: load.Load) -> None:
            for _ in stub.Subscribe(pb.SubscribeRequest(all=True)):
                if busy.done.is_set():
                    return

        return [rest, rest, unary, stream, subscribe]
    return calls


def _sidecar_calls(channel: grpc.Channel) -> list[Call]:
    stub = infer_grpc.GRPCInferenceServiceStub(channel)
    x = np.zeros((4, STEPS, N_FEATURES), "<f4")

    def infer(busy: load.Load) -> None:
        def requests() -> Iterator[infer_pb.ModelInferRequest]:
            while not busy.done.is_set():
                r = infer_pb.ModelInferRequest(model_name="rtvol_cnn", raw_input_contents=[x.tobytes()])
                r.inputs.add(name="window", datatype="FP32", shape=x.shape)
                yield r
        for _ in stub.ModelStreamInfer(requests()):
            busy.answered()

    return [infer, infer]


def _feature_calls(data: Path, target: str) -> Callable[[grpc.Channel], list[Call]]:
    def calls(channel: grpc.Channel) -> list[Call]:
        stub = fpb_grpc.FeaturesStub(channel)

        def ingest(busy: load.Load) -> None:
            feed.replay(target, data, range(0, 1))
            busy.answered()

        def read(busy: load.Load) -> None:
            stub.GetFeatures(fpb.GetFeaturesRequest(stock_ids=list(range(STOCKS))), timeout=2)
            busy.answered()

        return [ingest, read, read]
    return calls


def test_gateway_exits_within_its_drain_on_sigterm_under_load_every_time(
        upstreams: tuple[str, str], redis_db: str, tiny_repo: Path, tmp_path: Path) -> None:
    feature_url, model_url = upstreams

    def start() -> Started:
        gw, base, target = procs.gateway(
            tmp_path, tiny_repo, "--redis-url", redis_db, "--model-url", model_url, "--feature-url",
            feature_url, "--stocks", str(STOCKS), "--drain-seconds", str(DRAIN_S),
            "--vol-refresh-s", "0.001")  # many volatility reads: a stop lands on one sooner or later
        return gw, target, _gateway_calls(base)

    _cycles(20, start)


def test_sidecar_exits_within_its_drain_on_sigterm_under_load(tiny_repo: Path, tmp_path: Path) -> None:
    _cycles(3, lambda: (*procs.sidecar(tmp_path, tiny_repo, "--drain-seconds", str(DRAIN_S)), _sidecar_calls))


def test_feature_service_exits_within_its_drain_on_sigterm_under_load(
        redis_db: str, tiny_data: Path, tmp_path: Path) -> None:
    def start() -> Started:
        proc, target = procs.feature_service(tmp_path, redis_db, STOCKS, "--drain-seconds", str(DRAIN_S))
        return proc, target, _feature_calls(tiny_data, target)

    _cycles(3, start)
