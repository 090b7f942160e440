"""API keys and roles across the real stack: redis-server, feature service, sidecar and gateway,
each started with --api-keys-file. Every API refuses a missing key, an unknown key and a key
of the wrong role; the gateway reaches the sidecar and the feature service with its own
(service) key; a key added to the file works without a restart, a removed one stops."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from helpers import feed, procs

# tritonclient's copy of the inference protos, as the other sidecar tests: the two copies share
# the proto package 'inference', and only one can be loaded in a pytest process
from tritonclient.grpc import service_pb2 as ipb
from tritonclient.grpc import service_pb2_grpc as ipb_grpc

from rtvol import auth
from rtvol.proto.v1 import features_pb2 as fpb
from rtvol.proto.v1 import features_pb2_grpc as fpb_grpc
from rtvol.proto.v1 import signals_pb2 as pb
from rtvol.proto.v1 import signals_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration
STOCKS = 8
KEYS = {"engine": "k-engine-0123456789", "feeder": "k-feeder-0123456789", "operator": "k-ops-0123456789",
        "service": "k-gateway-0123456789"}


@dataclass
class Secured:
    base: str
    grpc: str
    feature: str
    model: str
    keys_file: Path
    http: httpx.Client

    def get(self, path: str, key: str | None = None) -> httpx.Response:
        return self.http.get(path, headers={"authorization": f"Bearer {key}"} if key else {})


def write_keys(path: Path, keys: dict[str, str]) -> None:
    tmp = path.with_suffix(".tmp")  # replaced whole, as a Secret volume's update is
    tmp.write_text("".join(f"{role}-holder {role} {auth.hash_key(key)}\n" for role, key in keys.items()))
    os.replace(tmp, path)


@pytest.fixture(scope="module")
def secured(redis_db: str, tiny_repo: Path, tiny_data: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    logs = tmp_path_factory.mktemp("auth")
    keys_file, gateway_key = logs / "api-keys", logs / "gateway.key"
    write_keys(keys_file, KEYS)
    gateway_key.write_text(KEYS["service"] + "\n")
    checked = ("--api-keys-file", str(keys_file))
    started: list[procs.Proc] = []
    try:
        feature, feature_url = procs.feature_service(logs, redis_db, STOCKS, *checked)
        started.append(feature)
        sidecar, model_url = procs.sidecar(logs, tiny_repo, *checked)
        started.append(sidecar)
        gw, base, grpc_target = procs.gateway(
            logs, tiny_repo, *checked, "--api-key-file", str(gateway_key), "--redis-url", redis_db,
            "--model-url", model_url, "--feature-url", feature_url, "--stocks", str(STOCKS),
            *procs.BUSY_MACHINE_BUDGETS, "--store-timeout-ms", "200")
        started.append(gw)
        feed.replay(feature_url, tiny_data, range(0, 3), api_key=KEYS["feeder"])
        with httpx.Client(base_url=base, timeout=10) as http:
            yield Secured(base, grpc_target, feature_url, model_url, keys_file, http)
    finally:
        codes = procs.stop_all(started)  # every one, even when one fails to stop
        assert set(codes.values()) <= {0}, codes


def test_rest_refuses_missing_unknown_and_wrong_role_keys(secured: Secured) -> None:
    body = {"stock_ids": [0]}
    missing = secured.http.post("/v1/predict", json=body)
    assert missing.status_code == 401 and "credential required" in missing.json()["error"]
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert secured.http.post("/v1/predict", json=body, headers={"x-api-key": "nope"}).status_code == 401
    wrong = secured.http.post("/v1/predict", json=body, headers={"x-api-key": KEYS["feeder"]})
    assert wrong.status_code == 403 and "role 'feeder'" in wrong.json()["error"]
    for header in ({"x-api-key": KEYS["engine"]}, {"authorization": f"Bearer {KEYS['engine']}"}):
        reply = secured.http.post("/v1/predict", json=body, headers=header)
        assert reply.status_code == 200, reply.text
        assert reply.json()["signals"][0]["tier"] == 1  # the gateway's service key opened the sidecar
    top = secured.get("/v1/universe?top_k=2", KEYS["engine"]).json()["top"]
    assert top is not None and len(top) == 2  # ... and the feature service


def test_probes_stay_open_and_metrics_and_docs_are_for_operators(secured: Secured) -> None:
    assert secured.get("/livez").status_code == 200 and secured.get("/readyz").status_code == 200
    for path in ("/metrics", "/docs", "/openapi.json"):
        assert secured.get(path).status_code == 401
        assert secured.get(path, KEYS["engine"]).status_code == 403
        assert secured.get(path, KEYS["operator"]).status_code == 200
    text = secured.get("/metrics", KEYS["operator"]).text
    assert 'rtvol_auth_failures_total{reason="forbidden",service="gateway"}' in text
    assert 'rtvol_gateway_watch_connected{replica="0"} 1.0' in text  # its service key opened the Watch stream


def test_gateway_grpc_refuses_and_accepts_by_role(secured: Secured) -> None:
    with grpc.insecure_channel(secured.grpc) as channel:
        predict = pb_grpc.SignalsStub(channel).Predict
        request = pb.PredictRequest(stock_ids=[0])
        for metadata, code in ((None, grpc.StatusCode.UNAUTHENTICATED),
                               (auth.metadata("nope"), grpc.StatusCode.UNAUTHENTICATED),
                               (auth.metadata(KEYS["feeder"]), grpc.StatusCode.PERMISSION_DENIED)):
            with pytest.raises(grpc.RpcError) as e:
                predict(request, metadata=metadata, timeout=10)
            assert e.value.code() == code
        reply = predict(request, metadata=[("x-api-key", KEYS["engine"])], timeout=10)
        assert reply.signals[0].tier == 1


def test_feature_service_takes_ingest_only_from_feeders(secured: Secured, tiny_data: Path) -> None:
    for key in ("", KEYS["engine"], KEYS["service"], KEYS["operator"]):
        with pytest.raises(grpc.RpcError) as e:
            feed.replay(secured.feature, tiny_data, range(3, 4), api_key=key)
        want = grpc.StatusCode.UNAUTHENTICATED if not key else grpc.StatusCode.PERMISSION_DENIED
        assert e.value.code() == want
    with grpc.insecure_channel(secured.feature) as channel:
        universe = fpb_grpc.FeaturesStub(channel).Universe
        with pytest.raises(grpc.RpcError) as e:
            universe(fpb.UniverseRequest(top_k=2), metadata=auth.metadata(KEYS["feeder"]), timeout=10)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_sidecar_serves_services_and_operators_only(secured: Secured) -> None:
    with grpc.insecure_channel(secured.model) as channel:
        ready = ipb_grpc.GRPCInferenceServiceStub(channel).ServerReady
        for key, code in (("", grpc.StatusCode.UNAUTHENTICATED),
                          (KEYS["engine"], grpc.StatusCode.PERMISSION_DENIED)):
            with pytest.raises(grpc.RpcError) as e:
                ready(ipb.ServerReadyRequest(), metadata=auth.metadata(key), timeout=10)
            assert e.value.code() == code
        assert ready(ipb.ServerReadyRequest(), metadata=auth.metadata(KEYS["operator"]), timeout=10).ready
    assert procs.grpc_ready(secured.model)()  # grpc.health.v1 stays open for probes


def test_keys_rotate_without_a_restart(secured: Secured) -> None:
    try:
        write_keys(secured.keys_file, {**KEYS, "engine": "k-engine-rotated-0123456789"})
        deadline = time.monotonic() + 10  # re-read at most a second after it changes
        while secured.get("/v1/signals/0", "k-engine-rotated-0123456789").status_code == 401:
            assert time.monotonic() < deadline, "the new key was not picked up"
            time.sleep(0.1)
        assert secured.get("/v1/signals/0", KEYS["engine"]).status_code == 401  # the old one is gone
    finally:
        write_keys(secured.keys_file, KEYS)
