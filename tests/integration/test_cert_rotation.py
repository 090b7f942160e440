"""Certificate rotation without a restart, as cert-manager does it: the files of a Secret
volume are replaced in place (a new ``..data`` folder, the link swapped atomically). A
running feature service (gRPC with mTLS, its /metrics over HTTPS, the plaintext health port
the kubelet probes) and a gateway (HTTPS) present the new certificate at the next handshake
and trust the new client CA; clients of the old CA are refused from then on."""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from helpers.grpc_health import health
from helpers.procs import Proc, free_port, grpc_ready, http_ready, stop_all

from rtvol import certs, stack
from rtvol.proto.v1.features_pb2 import GetFeaturesRequest
from rtvol.proto.v1.features_pb2_grpc import FeaturesStub
from rtvol.tls import ClientTLS

pytestmark = pytest.mark.integration


def pki(folder: Path) -> tuple[ClientTLS, dict[str, bytes]]:
    """A new CA: a client of it, and a server's Secret files (tls.crt, tls.key, ca.crt)."""
    ca, pairs = certs.local_pki(folder)
    server = pairs["feature"]
    secret = {"tls.crt": Path(server.cert).read_bytes(), "tls.key": Path(server.key).read_bytes(),
              "ca.crt": Path(ca).read_bytes()}
    return ClientTLS(ca, pairs["client"].cert, pairs["client"].key), secret


def publish(volume: Path, files: dict[str, bytes], version: str) -> None:
    """What the kubelet does on a Secret update: the files in a new folder, ``..data`` swapped to it."""
    folder = volume / f"..{version}"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
        if not (volume / name).is_symlink():
            (volume / name).symlink_to(Path("..data") / name)
    (volume / "..data_tmp").symlink_to(folder.name)
    os.replace(volume / "..data_tmp", volume / "..data")


def https_ok(url: str, client: ClientTLS) -> bool:
    """A new connection verified against ``client``'s CA answers 200."""
    try:
        return httpx.get(url, verify=client.ssl_context(), timeout=5).status_code == 200
    except (httpx.HTTPError, ssl.SSLError):
        return False


@dataclass
class Servers:
    old: ClientTLS  # a client of the first CA, the one the servers start with
    new: ClientTLS  # a client of the CA rotated in
    rotate: Callable[[], None]
    feature: str
    health: str
    metrics: list[str]  # the feature service's, the gateway supervisor's (its workers' summed)
    gateway: str


@pytest.fixture
def servers(tmp_path: Path, tiny_repo: Path) -> Iterator[Servers]:
    """A feature service (mTLS, HTTPS /metrics, health port) and a gateway of two workers
    (HTTPS, HTTPS /metrics) serving the files of one volume."""
    old, old_files = pki(tmp_path / "old")
    new, new_files = pki(tmp_path / "new")
    volume = tmp_path / "volume"
    volume.mkdir()
    publish(volume, old_files, "1")
    tls_args = ["--tls-cert", str(volume / "tls.crt"), "--tls-key", str(volume / "tls.key")]
    grpc_port, metrics, health_port, http, gateway_grpc, gateway_metrics = (free_port() for _ in range(6))
    found = Servers(old, new, lambda: publish(volume, new_files, "2"), f"127.0.0.1:{grpc_port}",
                    f"127.0.0.1:{health_port}",
                    [f"https://127.0.0.1:{port}/metrics" for port in (metrics, gateway_metrics)],
                    f"https://127.0.0.1:{http}/livez")
    started: list[Proc] = []
    try:
        started.append(Proc("feature service", stack.feature_cmd(
            grpc_port, metrics, "", 4, *tls_args, "--tls-client-ca", str(volume / "ca.crt"),
            "--health-port", str(health_port)), tmp_path / "feature.log", grpc_ready(found.feature, old)))
        started.append(Proc("gateway", stack.gateway_cmd(
            http, gateway_grpc, tiny_repo, *tls_args, "--workers", "2",
            "--metrics-port", str(gateway_metrics)),
                            tmp_path / "gateway.log", http_ready(found.gateway, old)))
        yield found
    finally:
        codes = stop_all(started)  # every one, even when one fails to stop
        assert set(codes.values()) <= {0}, codes


def test_a_rotated_certificate_serves_the_next_handshake_without_a_restart(servers: Servers) -> None:
    s = servers
    assert health(s.feature, s.old.grpc()) == grpc.StatusCode.OK
    assert health(s.feature, s.new.grpc()) == grpc.StatusCode.UNAVAILABLE  # neither side trusts the other
    assert health(s.feature, None) == grpc.StatusCode.UNAVAILABLE  # plaintext refused
    assert health(s.health, None) == grpc.StatusCode.OK  # the kubelet's plaintext probe port...
    with grpc.insecure_channel(s.health) as channel:  # ...serves nothing else
        with pytest.raises(grpc.RpcError) as refused:
            FeaturesStub(channel).GetFeatures(GetFeaturesRequest(stock_ids=[0]), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
    for url in (*s.metrics, s.gateway):
        assert https_ok(url, s.old) and not https_ok(url, s.new), url

    s.rotate()
    # the first handshake after the swap already sees the new files (no restart, no polling delay)
    assert health(s.feature, s.new.grpc()) == grpc.StatusCode.OK
    assert health(s.feature, s.old.grpc()) == grpc.StatusCode.UNAVAILABLE
    for url in (*s.metrics, s.gateway, s.gateway):  # twice: SO_REUSEPORT may pick either worker
        assert https_ok(url, s.new) and not https_ok(url, s.old), url
    assert health(s.health, None) == grpc.StatusCode.OK
