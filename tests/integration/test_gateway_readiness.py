"""Readiness of a real gateway process (/readyz and gRPC health): not ready while start-up
waits for its sidecar; then ready, answering from tier 2 with the reason (sidecar unreachable
since T, its breaker open since T) or from tier 1 once the sidecar is ready."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from helpers import feed, procs

from rtvol import stack

pytestmark = pytest.mark.integration
STOCKS = 4
SINCE = r"since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


class Blackhole:
    """A port that accepts TCP connections (the kernel's backlog) and never answers: a hung
    sidecar, so every probe runs into its timeout."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(16)
        self.port = int(self.socket.getsockname()[1])

    def close(self) -> None:
        self.socket.close()


@pytest.fixture
def feature_url(redis_db: str, tiny_data: Path, tmp_path: Path) -> Iterator[str]:
    feature, url = procs.feature_service(tmp_path, redis_db, STOCKS)
    try:
        feed.replay(url, tiny_data, range(0, 3))
        yield url
    finally:
        feature.stop()


def _health(target: str) -> Any:
    with grpc.insecure_channel(target) as ch:
        request = health_pb2.HealthCheckRequest(service="")
        return health_pb2_grpc.HealthStub(ch).Check(request, timeout=5).status


def _tiers(http: httpx.Client) -> set[int]:
    reply = http.post("/v1/predict", json={"stock_ids": [0, 1]})
    assert reply.status_code == 200, reply.text
    return {s["tier"] for s in reply.json()["signals"]}


def test_readiness_follows_start_up_and_the_sidecar(redis_db: str, feature_url: str, tiny_repo: Path,
                                                    tmp_path: Path) -> None:
    hole = Blackhole()
    http_port, grpc_port = procs.free_port(), procs.free_port()
    base, grpc_target = f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}"
    started: list[procs.Proc] = []
    try:
        # ready to poll once it listens (/livez), so that start-up itself can be watched
        gateway = procs.Proc("gateway", stack.gateway_cmd(
            http_port, grpc_port, tiny_repo, "--redis-url", redis_db, "--model-url", f"127.0.0.1:{hole.port}",
            "--stocks", str(STOCKS), "--no-precompute", "--model-wait-s", "3", "--model-probe-s", "0.2",
            "--deadline-ms", "2000", "--model-timeout-ms", "1000", "--model-latency-budget-ms", "50",
            "--breaker-open-s", "2"),
            tmp_path / "gateway.log", procs.http_ready(base + "/livez"))
        started.append(gateway)
        http = httpx.Client(base_url=base, timeout=10)

        starting = http.get("/readyz")
        assert starting.status_code == 503, starting.text
        assert starting.json() == {"ready": False, "reason": "starting: waiting up to 3 s for the sidecar"}
        assert _health(grpc_target) == health_pb2.HealthCheckResponse.NOT_SERVING

        # the sidecar never answered: the gateway has decided to serve from tier 2, and says why
        assert procs.wait_until(lambda: http.get("/readyz").status_code == 200, 15), gateway.tail()
        state = http.get("/readyz").json()
        assert state["tier"] == 2 and state["ready"] is True
        hung = r"sidecar unreachable \((DEADLINE_EXCEEDED|UNAVAILABLE)\) "  # the handshake or the call
        assert re.fullmatch(hung + SINCE, state["reason"]), state
        assert _health(grpc_target) == health_pb2.HealthCheckResponse.SERVING
        assert _tiers(http) == {2}

        # a real (slow) sidecar comes up on that port: the probe passes, the breaker that the
        # failed probes held open half-opens, and the next request is tier 1's
        hole.close()
        sidecar, _ = procs.sidecar(tmp_path, tiny_repo, "--debug-delay-ms", "100", port=hole.port)
        started.append(sidecar)
        assert procs.wait_until(lambda: http.get("/readyz").json().get("tier") == 1, 15), gateway.tail()
        assert http.get("/readyz").json() == {
            "ready": True, "tier": 1, "reason": "sidecar breaker half-open: the next request tries tier 1"}
        assert _tiers(http) == {1}

        # that answer was over the latency budget: the breaker is open again, tier 2 answers
        state = http.get("/readyz").json()
        assert state["ready"] is True and state["tier"] == 2, state
        assert re.fullmatch("sidecar breaker open " + SINCE, state["reason"]), state
        assert _tiers(http) == {2}

        # the sidecar dies: unreachable (the probe), still ready on tier 2
        sidecar.kill()
        assert procs.wait_until(lambda: "unreachable" in http.get("/readyz").json()["reason"], 10)
        state = http.get("/readyz").json()
        assert state["ready"] is True and state["tier"] == 2
        assert re.fullmatch(r"sidecar unreachable \(UNAVAILABLE\) " + SINCE, state["reason"]), state
        http.close()
        assert gateway.stop() == 0, gateway.tail()
    finally:
        hole.close()
        for p in reversed(started):
            p.stop()


def test_without_a_sidecar_the_gateway_is_ready_on_tier_2(redis_db: str, feature_url: str, tiny_repo: Path,
                                                          tmp_path: Path) -> None:
    gateway, base, grpc_target = procs.gateway(tmp_path, tiny_repo, "--redis-url", redis_db,
                                               "--stocks", str(STOCKS), "--no-precompute")
    try:
        with httpx.Client(base_url=base, timeout=10) as http:
            assert http.get("/readyz").json() == {"ready": True, "tier": 2,
                                                  "reason": "no sidecar configured (--model-url)"}
            assert _tiers(http) == {2}
        assert _health(grpc_target) == health_pb2.HealthCheckResponse.SERVING
    finally:
        assert gateway.stop() == 0, gateway.tail()
