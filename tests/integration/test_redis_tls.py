"""Redis over TLS as the chart runs it (charts/rtvol/templates/redis.yaml with tls.enabled): a
real redis-server TLS-only (``--port 0 --tls-port``) demanding a client certificate, protected
mode on, one ACL user per service. The feature service and the gateway reach it with
``rediss://`` URLs, the CA, their own certificates and their password files; plaintext and
TLS without a client certificate are refused, and the gateway's user still cannot write."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from helpers import feed
from helpers.procs import Proc, free_port, grpc_ready, http_ready, stop_all, wait_until

from rtvol import certs, redis_acl, stack
from rtvol.features.spec import spec_hash
from rtvol.featurestore import window_key
from rtvol.services.gateway.cache import hash_key
from rtvol.tls import ClientTLS

pytestmark = pytest.mark.integration
STOCKS = 4


def tls_redis_cmd(port: int, workdir: Path, ca: str, pair: certs.Pair) -> list[str]:
    """The chart's TLS arguments (the chart's ACL file is replaced by ACL SETUSER below)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not installed")
    return [binary, "--port", "0", "--tls-port", str(port), "--tls-cert-file", pair.cert,
            "--tls-key-file", pair.key, "--tls-ca-cert-file", ca, "--tls-auth-clients", "yes",
            "--protected-mode", "yes",
            "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)]


def connect(port: int, client: ClientTLS | None, **kwargs: object) -> redis.Redis:
    if client is None:
        return redis.Redis(port=port, socket_timeout=5, **kwargs)  # type: ignore[arg-type]
    return redis.Redis(port=port, ssl=True, socket_timeout=5, **client.redis(), **kwargs)  # type: ignore[arg-type]


def pings(port: int, client: ClientTLS | None) -> bool:
    try:
        with connect(port, client) as r:
            return bool(r.ping())
    except redis.exceptions.ConnectionError:
        return False


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, str, dict[str, certs.Pair]]]:
    """(port, CA, certificates) of a TLS-only redis-server with the services' ACL users."""
    ca, pairs = certs.local_pki(tmp_path / "pki")
    port = free_port()
    admin = ClientTLS(ca, pairs["client"].cert, pairs["client"].key)
    server = Proc("redis-server", tls_redis_cmd(port, tmp_path, ca, pairs["redis"]), tmp_path / "redis.log",
                  lambda: pings(port, admin), timeout_s=10)
    try:
        with connect(port, admin) as r:
            for name in redis_acl.USERS:
                r.execute_command(*redis_acl.setuser(name, f"pw-{name}"))
            r.execute_command("ACL", "SETUSER", "default", "off")  # as the chart's ACL file
        yield port, ca, pairs
    finally:
        server.stop()


def test_the_services_reach_redis_over_tls_with_their_users(
        tls_redis: tuple[int, str, dict[str, certs.Pair]], tiny_repo: Path, tiny_data: Path,
        tmp_path: Path) -> None:
    port, ca, pairs = tls_redis
    assert not pings(port, None)  # plaintext refused
    assert not pings(port, ClientTLS(ca))  # TLS without a client certificate refused
    started: list[Proc] = []
    try:
        urls, flags = {}, {}
        for name in ("feature", "gateway"):
            (tmp_path / f"{name}-password").write_text(f"pw-rtvol-{name}\n")
            urls[name] = f"rediss://rtvol-{name}@127.0.0.1:{port}/0"
            flags[name] = ["--redis-password-file", str(tmp_path / f"{name}-password"),
                           "--tls-ca", ca, "--tls-cert", pairs[name].cert, "--tls-key", pairs[name].key]
        client = ClientTLS(ca, pairs["client"].cert, pairs["client"].key)
        grpc_port, http = free_port(), free_port()
        target = f"127.0.0.1:{grpc_port}"
        started.append(Proc("feature service", stack.feature_cmd(grpc_port, 0, urls["feature"], STOCKS,
                                                                 *flags["feature"]),
                            tmp_path / "feature.log", grpc_ready(target, client)))
        base = f"https://127.0.0.1:{http}"
        started.append(Proc("gateway", stack.gateway_cmd(http, free_port(), tiny_repo, *flags["gateway"],
                                                         "--redis-url", urls["gateway"],
                                                         "--stocks", str(STOCKS), "--store-timeout-ms", "500",
                                                         "--deadline-ms", "1000"),
                            tmp_path / "gateway.log", http_ready(base + "/readyz", client)))
        feed.replay(target, tiny_data, range(0, 3), client_tls=client)
        signal = httpx.post(base + "/v1/predict", json={"stock_ids": [0]}, timeout=10,
                            verify=client.ssl_context()).json()["signals"][0]
        assert signal["tier"] == 2 and signal["feature_age_ms"] >= 0, signal  # read over TLS as its user
        gateway_client = ClientTLS(ca, pairs["gateway"].cert, pairs["gateway"].key)
        with connect(port, gateway_client, username="rtvol-gateway", password="pw-rtvol-gateway") as gw:
            assert wait_until(lambda: gw.hlen(hash_key(spec_hash())) > 0, 20)  # its HSET of signals
            with pytest.raises(redis.exceptions.NoPermissionError):
                gw.set(window_key(spec_hash(), 0), b"forged")
    finally:
        codes = stop_all(started)  # every one, even when one fails to stop
        assert set(codes.values()) <= {0}, codes
