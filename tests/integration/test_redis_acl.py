"""Least-privilege Redis users (rtvol/redis_acl.py) on a real redis-server: the feature service
and gateway run end to end with their own users, and the gateway's user cannot write a
feature window, the stream or the volatility estimate, nor run admin commands."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from helpers import feed, procs

from rtvol import redis_acl
from rtvol.features.spec import spec_hash
from rtvol.featurestore import stream_key, vol_key, window_key
from rtvol.services.gateway.cache import hash_key

pytestmark = pytest.mark.integration
STOCKS = 4


@pytest.fixture(scope="module")
def acl_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str]]:
    """(admin URL, the feature service's URL, the gateway's URL) of a redis-server of this module's."""
    workdir = tmp_path_factory.mktemp("redis-acl")
    server = procs.redis(workdir)
    try:
        admin = redis.Redis.from_url(server.url)  # type: ignore[attr-defined]
        for name in redis_acl.USERS:
            admin.execute_command(*redis_acl.setuser(name, f"pw-{name}"))
        admin.close()
        host = server.url.removeprefix("redis://")  # type: ignore[attr-defined]
        yield (server.url, f"redis://rtvol-feature:pw-rtvol-feature@{host}",  # type: ignore[attr-defined]
               f"redis://rtvol-gateway:pw-rtvol-gateway@{host}")
    finally:
        server.stop()


def test_services_work_with_their_users_and_the_gateway_cannot_write(
        acl_server: tuple[str, str, str], tiny_repo: Path, tiny_data: Path,
        tmp_path: Path) -> None:
    _, feature_url, gateway_url = acl_server
    started: list[procs.Proc] = []
    try:
        feature, target = procs.feature_service(tmp_path, feature_url, STOCKS)
        started.append(feature)
        gateway, base, _ = procs.gateway(tmp_path, tiny_repo, "--redis-url", gateway_url, "--stocks",
                                         str(STOCKS), "--store-timeout-ms", "200", "--deadline-ms", "500")
        started.append(gateway)
        feed.replay(target, tiny_data, range(0, 3))
        signal = httpx.post(base + "/v1/predict", json={"stock_ids": [0]}, timeout=10).json()["signals"][0]
        assert signal["tier"] == 2 and signal["feature_age_ms"] >= 0, signal  # read with the gateway's user
        admin = redis.Redis.from_url(acl_server[0])
        assert procs.wait_until(lambda: admin.hlen(hash_key(spec_hash())) > 0, 20)  # its HSET of signals
        admin.close()
    finally:
        codes = procs.stop_all(started)  # every one, even when one fails to stop
        assert set(codes.values()) <= {0}, codes

    gw = redis.Redis.from_url(gateway_url)
    spec = spec_hash()
    assert gw.get(window_key(spec, 0)) is not None and gw.hgetall(vol_key(spec))  # it reads
    for command in (("SET", window_key(spec, 0), b"forged"), ("DEL", window_key(spec, 0)),
                    ("XADD", stream_key(spec), "*", "ids", b"\0\0\0\0"), ("SET", vol_key(spec), b"x"),
                    ("FLUSHDB",), ("CONFIG", "SET", "protected-mode", "no"), ("KEYS", "*"),
                    ("PUBLISH", "rtvol:alerts", "forged")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            gw.execute_command(*command)
    gw.close()
    fs = redis.Redis.from_url(feature_url)
    for command in (("FLUSHDB",), ("CONFIG", "GET", "*"), ("SET", "elsewhere", "x")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            fs.execute_command(*command)
    fs.close()
