"""Gateway bounds as a real process: HTTP connection cap, request read timeout (slowloris),
body size; and a model that answers NaN is never served (issue 16)."""

from __future__ import annotations

import math
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers import feed, models, procs

pytestmark = pytest.mark.integration
STOCKS = 8
MAX_CONNECTIONS = 20
READ_TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def bare_gateway(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A gateway with small HTTP bounds (no store, no sidecar: these tests need no answers)."""
    gw, base, _ = procs.gateway(tmp_path_factory.mktemp("gateway_bounds"), tiny_repo,
                                "--http-max-connections", str(MAX_CONNECTIONS),
                                "--http-request-timeout-s", str(READ_TIMEOUT_S),
                                "--http-max-body-bytes", "65536")
    try:
        yield base
    finally:
        assert gw.stop() == 0, gw.tail()


def _connect(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=5)


def _closed_by_server(s: socket.socket, within_s: float) -> bool:
    s.settimeout(within_s)
    try:
        return s.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_a_request_that_never_completes_is_cut_off(bare_gateway: str) -> None:
    with _connect(bare_gateway) as slow:
        slow.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\n")  # and never the rest
        t0 = time.monotonic()
        assert _closed_by_server(slow, READ_TIMEOUT_S + 2)
        assert time.monotonic() - t0 >= READ_TIMEOUT_S - 0.2
    with _connect(bare_gateway) as silent:  # connects and sends nothing at all
        assert _closed_by_server(silent, READ_TIMEOUT_S + 2)
    assert httpx.get(bare_gateway + "/livez").status_code == 200


def test_connections_beyond_the_cap_are_closed_and_the_rest_still_serve(bare_gateway: str) -> None:
    held = [_connect(bare_gateway) for _ in range(MAX_CONNECTIONS + 10)]
    try:
        time.sleep(0.2)  # accepted (or refused) by now
        refused = sum(_closed_by_server(s, 0.05) for s in held)
        assert refused >= 10, refused
    finally:
        for s in held:
            s.close()
    # the held ones were cut at the read timeout or closed here: new clients are served
    assert procs.wait_until(lambda: httpx.get(bare_gateway + "/livez").status_code == 200, 5)
    metrics = httpx.get(bare_gateway + "/metrics").text
    assert re.search(r'rtvol_gateway_http_refused_total\{reason="connections"\} [1-9]', metrics)


def test_a_body_over_the_limit_is_413_without_being_read(bare_gateway: str) -> None:
    big = b'{"stock_ids": [' + b"1," * 50_000 + b"1]}"
    reply = httpx.post(bare_gateway + "/v1/predict", content=big,
                       headers={"content-type": "application/json"})
    assert reply.status_code == 413 and reply.json()["error"].startswith("body")
    ok = httpx.post(bare_gateway + "/v1/predict", json={"stock_ids": [0]})
    assert ok.status_code == 200  # no store: an item error, but answered


def test_a_model_answering_nan_is_never_served(redis_db: str, tmp_path: Path, tiny_data: Path) -> None:
    """Tier 1 (sidecar) and tier 2 (in-gateway) both run a model whose rv is NaN: the answer
    falls to tier 3 (the volatility estimate) and both fall-throughs are counted."""
    repo = tmp_path / "models"
    models.export_non_finite(repo)
    redis_url = redis_db
    started: list[procs.Proc] = []
    try:
        feature_url, model_url = procs.upstreams(tmp_path, redis_url, repo, STOCKS, started)
        gw, base, _ = procs.gateway(tmp_path, repo, "--redis-url", redis_url, "--model-url", model_url,
                                    "--stocks", str(STOCKS), *procs.BUSY_MACHINE_BUDGETS)
        started.append(gw)
        feed.replay(feature_url, tiny_data, range(0, 3))
        http = httpx.Client(base_url=base, timeout=10)

        def tier3_answers() -> bool:
            signals = http.post("/v1/predict", json={"stock_ids": [0, 1]}).json()["signals"]
            return all(s.get("tier") == 3 for s in signals)

        assert procs.wait_until(tier3_answers, 10)  # once the volatility estimate is in
        for _ in range(5):
            reply = http.post("/v1/predict", json={"stock_ids": list(range(STOCKS))})
            assert reply.status_code == 200
            for sig in reply.json()["signals"]:
                assert "error" in sig or (sig["tier"] == 3 and math.isfinite(sig["rv"])), sig
        text = http.get("/metrics").text
        for tier in ("1", "2"):
            assert re.search(rf'rtvol_gateway_non_finite_outputs_total\{{tier="{tier}"\}} [1-9]', text), tier
    finally:
        procs.stop_all(started)
