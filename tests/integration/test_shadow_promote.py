"""Shadow and promote against real processes (redis-server, feature service, model sidecar,
gateway following the Watch stream): two versions in a repository, version 1 served and
version 2 in shadow. The shadow is computed on the same windows and counted by version and
role, while Predict and Subscribe answer with the served version only; `rtvol promote` switches
what is served (sidecar and tier 2) without a restart; a tampered version is refused."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from helpers import procs
from helpers.models import MODEL, export_random

from rtvol import cli, stack
from rtvol.loadtest.ticks import StepTicks
from rtvol.proto.v1 import features_pb2_grpc as fpb_grpc
from rtvol.proto.v1 import signals_pb2 as pb
from rtvol.proto.v1 import signals_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration
STOCKS = 16
POLL = "0.2"
WAIT_S = 20.0


class Stack:
    def __init__(self, repo: Path, feature: str, base: str, grpc_target: str) -> None:
        self.repo, self.feature, self.base, self.grpc = repo, feature, base, grpc_target
        self.ticks = StepTicks(STOCKS)

    def feed(self, steps: int = 2) -> None:
        """Close ``steps`` steps of every stock: the pipeline infers their windows."""
        with grpc.insecure_channel(self.feature) as ch:
            ingest = fpb_grpc.FeaturesStub(ch).Ingest
            ingest(iter([self.ticks.message(list(range(STOCKS))) for _ in range(steps)]), timeout=10)

    def predict(self) -> list[pb.Signal]:
        with grpc.insecure_channel(self.grpc) as ch:
            return list(pb_grpc.SignalsStub(ch).Predict(pb.PredictRequest(stock_ids=list(range(STOCKS))),
                                                        timeout=10).signals)

    def metric(self, name: str, **labels: str) -> float:
        text = httpx.get(self.base + "/metrics", timeout=5).text
        total = 0.0
        for found, value in re.findall(re.escape(name) + r"\{([^}]*)\} ([0-9.e+-]+)", text):
            have = dict(re.findall(r'(\w+)="([^"]*)"', found))
            if all(have.get(k) == v for k, v in labels.items()):
                total += float(value)
        return total


def promote(repo: Path, *args: str) -> int:
    return cli.main([*args, "--repo", str(repo)])


@pytest.fixture(scope="module")
def two_versions(redis_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    repo = tmp_path_factory.mktemp("shadow_repo")
    assert (export_random(repo, 1), export_random(repo, 2)) == (1, 2)
    assert promote(repo, "promote", MODEL, "1") == 0
    assert promote(repo, "shadow", MODEL, "2") == 0
    logs = tmp_path_factory.mktemp("shadow_logs")
    started: list[procs.Proc] = []
    try:
        feature, feature_url = procs.feature_service(logs, redis_db, STOCKS)
        started.append(feature)
        port = procs.free_port()
        model_url = f"127.0.0.1:{port}"
        started.append(procs.Proc("model sidecar", stack.sidecar_cmd(port, 0, repo, "--poll-seconds", POLL),
                                  logs / "sidecar.log", procs.grpc_ready(model_url)))
        gw, base, grpc_target = procs.gateway(
            logs, repo, "--redis-url", redis_db, "--model-url", model_url, "--feature-url", feature_url,
            "--stocks", str(STOCKS), "--deadline-ms", "500", "--model-timeout-ms", "200",
            "--model-latency-budget-ms", "100", "--model-poll-s", POLL)
        started.append(gw)
        yield Stack(repo, feature_url, base, grpc_target)
    finally:
        codes = procs.stop_all(started)  # every one, even when one fails to stop
        assert set(codes.values()) <= {0}, codes


def _subscribe(target: str, out: list[pb.Signal], ready: threading.Event, stop: threading.Event) -> None:
    with grpc.insecure_channel(target) as ch:
        stream = pb_grpc.SignalsStub(ch).Subscribe(pb.SubscribeRequest(all=True), timeout=WAIT_S * 2)
        ready.set()
        try:
            for sig in stream:
                out.append(sig)
                if stop.is_set():
                    break
        except grpc.RpcError as e:
            if e.code() not in (grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise
        finally:
            stream.cancel()


def _wait(what: str, check: object) -> None:
    assert callable(check)
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, f"not within {WAIT_S:g} s: {what}"
        time.sleep(0.1)


def test_shadow_is_computed_and_counted_but_only_the_served_version_answers(two_versions: Stack) -> None:
    s = two_versions
    _wait("the gateway follows the shadow version", lambda: s.metric(
        "rtvol_gateway_model_version", role="shadow") == 2)
    pushed: list[pb.Signal] = []
    ready, stop = threading.Event(), threading.Event()
    sub = threading.Thread(target=_subscribe, args=(s.grpc, pushed, ready, stop), daemon=True)
    sub.start()
    assert ready.wait(10)
    time.sleep(0.2)  # the Subscribe call is registered before the windows change
    s.feed()
    _wait("shadow signals of version 2", lambda: s.metric(
        "rtvol_gateway_model_signals_total", model=MODEL, version="2", role="shadow", tier="1") >= STOCKS)
    _wait("pushed signals", lambda: len({p.stock_id for p in pushed}) == STOCKS)
    served = s.predict()
    stop.set()
    assert all(not sig.error for sig in served), served
    assert {(sig.version, sig.tier) for sig in served} == {("1", 1)}
    assert {(p.version, p.tier) for p in pushed} == {("1", 1)}
    assert s.metric("rtvol_gateway_model_signals_total", version="2", role="serving") == 0
    assert s.metric("rtvol_gateway_model_signals_total", version="1", role="serving", tier="1") >= STOCKS
    assert s.metric("rtvol_gateway_shadow_errors_total") == 0
    # handed to the live scorer as role=shadow (scored once their bucket is known; these
    # windows are mid-bucket, so counted as such)
    assert s.metric("rtvol_live_scored_signals_total", role="shadow") + s.metric(
        "rtvol_live_unscored_signals_total", role="shadow") >= STOCKS
    assert s.metric("rtvol_gateway_breaker_transitions_total", upstream="sidecar") == 0
    sub.join(10)


def test_promote_refuses_a_tampered_version_and_switches_what_is_served(two_versions: Stack) -> None:
    s = two_versions
    assert export_random(s.repo, 3) == 3
    (s.repo / MODEL / "3" / "model.onnx").write_bytes(b"tampered")
    assert promote(s.repo, "promote", MODEL, "3") == 2  # refused: nothing changes
    s.feed(1)
    assert {sig.version for sig in s.predict()} == {"1"}

    assert promote(s.repo, "promote", MODEL, "2") == 0
    _wait("tier 2 follows the promotion", lambda: s.metric(
        "rtvol_gateway_model_version", role="serving") == 2 and s.metric(
        "rtvol_gateway_model_version", role="shadow") == 0)

    def served_by_2() -> bool:
        s.feed(1)
        return {(sig.version, sig.tier) for sig in s.predict()} == {("2", 1)}
    _wait("the sidecar serves version 2", served_by_2)
