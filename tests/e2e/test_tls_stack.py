"""`rtvol up --tls`: the local stack on TLS, once. Certificates of the stack's own CA open every
listener (mTLS to the feature service and sidecar: the gateway answers from tier 1, so its
client certificate was accepted); plaintext, and TLS without a client certificate where one
is demanded, are refused."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from helpers.grpc_health import health

from rtvol.proto.v1 import signals_pb2 as pb
from rtvol.proto.v1 import signals_pb2_grpc as pb_grpc
from rtvol.tls import ClientTLS

pytestmark = pytest.mark.integration


def rtvol(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rtvol.cli", *args], capture_output=True, text=True,
                          timeout=timeout_s)


@pytest.fixture(scope="module")
def stack(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Any], Path]]:
    run_dir = tmp_path_factory.mktemp("tls") / "run"
    try:
        done = rtvol("up", "--tls", "--free-ports", "--run-dir", str(run_dir), "--repo", str(tiny_repo),
                     "--stocks", "8")
        assert done.returncode == 0, done.stdout + done.stderr
        yield json.loads((run_dir / "stack.json").read_text())["ports"], run_dir / "pki"
    finally:
        down = rtvol("down", "--run-dir", str(run_dir))
        assert down.returncode == 0, down.stderr


def client(pki: Path, with_cert: bool = True) -> ClientTLS:
    return ClientTLS(str(pki / "ca.pem"), *((str(pki / "client.pem"), str(pki / "client.key")) if with_cert
                                            else ("", "")))


def test_the_stack_on_tls_answers_and_refuses_plaintext(stack: tuple[dict[str, Any], Path],
                                                        tiny_data: Path) -> None:
    ports, pki = stack
    status = rtvol("status", "--run-dir", str(pki.parent))
    assert status.returncode == 0 and "https://" in status.stdout, status.stdout  # probes speak TLS
    feature = f"127.0.0.1:{ports['feature']}"
    tls_args = ["--tls-ca", str(pki / "ca.pem"), "--tls-cert", str(pki / "client.pem"),
                "--tls-key", str(pki / "client.key")]
    fed = rtvol("feed", "--data", str(tiny_data), "--target", feature, "--buckets", "0:3", *tls_args)
    assert fed.returncode == 0 and "rejected 0" in fed.stdout, fed.stdout + fed.stderr
    no_cert = rtvol("feed", "--data", str(tiny_data), "--target", feature, "--buckets", "3:1",
                    "--tls-ca", str(pki / "ca.pem"))
    assert no_cert.returncode == 2 and "UNAVAILABLE" in no_cert.stderr  # mTLS: no client certificate

    ctx = client(pki).ssl_context()
    base = f"https://127.0.0.1:{ports['gateway']}"
    reply = httpx.post(base + "/v1/predict", json={"stock_ids": [0, 1]}, verify=ctx, timeout=10)
    assert reply.status_code == 200, reply.text
    assert [s["tier"] for s in reply.json()["signals"]] == [1, 1]  # gateway -> sidecar over mTLS
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{ports['gateway']}/livez", timeout=5)  # plaintext HTTP
    with pytest.raises(httpx.HTTPError):  # a certificate of another CA is not trusted
        httpx.get(base + "/livez", verify=ssl.create_default_context(), timeout=5)
    with grpc.secure_channel(f"127.0.0.1:{ports['gateway_grpc']}", client(pki, False).grpc()) as ch:
        answered = pb_grpc.SignalsStub(ch).Predict(pb.PredictRequest(stock_ids=[0]), timeout=10)
        assert answered.signals[0].tier == 1  # the gateway asks engines for no client certificate
    metrics = httpx.get(f"https://127.0.0.1:{ports['model_metrics']}/metrics", verify=ctx, timeout=10)
    assert "rtvol_model_loaded_version" in metrics.text

    for name in ("gateway_grpc", "feature", "model"):
        target = f"127.0.0.1:{ports[name]}"
        assert health(target, None) == grpc.StatusCode.UNAVAILABLE, name  # plaintext gRPC
        assert health(target, client(pki).grpc()) == grpc.StatusCode.OK, name
    for name in ("feature", "model"):  # mTLS: TLS without a client certificate is refused
        assert health(f"127.0.0.1:{ports[name]}", client(pki, False).grpc()) == grpc.StatusCode.UNAVAILABLE
