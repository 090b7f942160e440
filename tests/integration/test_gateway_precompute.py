"""Cold start: a gateway started over a feature store that already holds windows, and whose
change stream holds nothing, pre-computes every stock's signal, so a Predict with
max_staleness_ms is a cache hit from the start (no change has to come first)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from helpers import procs

from rtvol.features.spec import N_FEATURES, STEPS, spec_hash
from rtvol.featurestore import RedisStore, stream_key
from rtvol.proto.v1 import signals_pb2 as pb
from rtvol.proto.v1 import signals_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration
STOCKS = 6
WITH_FEATURES = [0, 2, 3, 5]


def _write_windows_without_changes(redis_url: str) -> None:
    async def write() -> None:
        store = RedisStore.connect(redis_url, spec_hash())
        try:
            ids = np.asarray(WITH_FEATURES, np.int32)
            shape = (len(ids), STEPS, N_FEATURES)
            windows = np.random.default_rng(0).lognormal(-6, 1, shape).astype(np.float32)
            await store.write(ids, windows, np.arange(1, len(ids) + 1, dtype=np.int64),
                              np.full(len(ids), 1_000_000, np.int64))
            await store.client.delete(stream_key(spec_hash()))  # nothing for the change stream to replay
        finally:
            await store.close()
    asyncio.run(write())


@pytest.fixture(scope="module")
def gateway(redis_db: str, tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[str, str]]:
    _write_windows_without_changes(redis_db)
    gw, base, grpc_target = procs.gateway(tmp_path_factory.mktemp("precompute"), tiny_repo,
                                          "--redis-url", redis_db, "--stocks", str(STOCKS))
    try:
        yield base, grpc_target
    finally:
        assert gw.stop() == 0, gw.tail()


def _metric(http: httpx.Client, name: str) -> float:
    match = re.search(re.escape(name) + r" ([0-9.e+]+)", http.get("/metrics").text)
    return float(match.group(1)) if match else 0.0


def test_cold_start_precomputes_every_stock_with_features(gateway: tuple[str, str]) -> None:
    base, grpc_target = gateway
    with httpx.Client(base_url=base, timeout=5) as http:
        def cached(sid: int) -> bool:
            return http.get(f"/v1/signals/{sid}").status_code == 200
        # only reads the cache (a GET never computes): these come from the cold start alone
        assert procs.wait_until(lambda: all(cached(s) for s in WITH_FEATURES), 10, 0.1)
        assert not any(cached(s) for s in set(range(STOCKS)) - set(WITH_FEATURES))
        assert _metric(http, "rtvol_gateway_precomputed_total") == len(WITH_FEATURES)
        signal = http.get("/v1/signals/3").json()
        assert signal["tier"] == 2 and signal["stock_id"] == 3  # no sidecar here: ONNX Runtime

        hits = _metric(http, 'rtvol_gateway_cache_total{result="hit"}')
        with grpc.insecure_channel(grpc_target) as ch:
            reply = pb_grpc.SignalsStub(ch).Predict(
                pb.PredictRequest(stock_ids=WITH_FEATURES, max_staleness_ms=60_000), timeout=5)
        assert [s.rv for s in reply.signals] == [http.get(f"/v1/signals/{s}").json()["rv"]
                                                 for s in WITH_FEATURES]
        assert _metric(http, 'rtvol_gateway_cache_total{result="hit"}') == hits + len(WITH_FEATURES)
