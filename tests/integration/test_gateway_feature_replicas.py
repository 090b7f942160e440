"""A gateway in front of two feature-service replicas (real redis-server, two feature
processes owning the even and the odd stocks, sidecar, gateway given both in ordinal order):
it follows each replica's Watch stream, so the stocks of both get pushed signals, Predict
answers them from memory with read-your-writes at step granularity (no window read from
Redis), and /v1/universe ranks the stocks of both replicas."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
import redis
from helpers import metrics, procs, subscribe

from rtvol import sharding, stack
from rtvol.loadtest.ticks import StepTicks
from rtvol.proto.v1 import features_pb2_grpc as fpb_grpc
from rtvol.proto.v1 import signals_pb2 as pb
from rtvol.proto.v1 import signals_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration
STOCKS, REPLICAS = 16, 2
CHECKED = list(range(8))  # the even ones are replica 0's, the odd ones replica 1's
STEPS = 6


class Stack:
    def __init__(self, features: list[str], base: str, grpc_target: str, redis_url: str) -> None:
        self.features, self.base, self.grpc, self.redis_url = features, base, grpc_target, redis_url

    def owner(self, sid: int) -> str:
        return self.features[int(sharding.owner([sid], REPLICAS)[0])]


@pytest.fixture(scope="module")
def replicated(redis_db: str, tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    redis.Redis.from_url(redis_db).flushdb()
    log_dir = tmp_path_factory.mktemp("gateway_feature_replicas")
    started: list[procs.Proc] = []
    try:
        features = []
        for i in range(REPLICAS):
            port = procs.free_port()
            features.append(f"127.0.0.1:{port}")
            cmd = stack.feature_cmd(port, 0, redis_db, STOCKS, "--replicas", str(REPLICAS),
                                    "--replica", str(i), *procs.BUSY_MACHINE_WATCH)
            started.append(procs.Proc(f"feature service {i}", cmd, log_dir / f"feature-{i}.log",
                                      procs.grpc_ready(features[-1])))
        model, model_url = procs.sidecar(log_dir, tiny_repo)
        started.append(model)
        gw, base, grpc_target = procs.gateway(
            log_dir, tiny_repo, "--redis-url", redis_db, "--model-url", model_url,
            "--feature-url", ",".join(features), "--stocks", str(STOCKS), "--workers", "1",
            *procs.BUSY_MACHINE_BUDGETS)
        started.append(gw)
        yield Stack(features, base, grpc_target, redis_db)
    finally:
        codes = procs.stop_all(started)  # every one, even when one fails to stop
        assert set(codes.values()) <= {0}, codes


def test_stocks_of_both_replicas_get_pushed_signals_and_read_your_writes(replicated: Stack) -> None:
    r = redis.Redis.from_url(replicated.redis_url)
    ticks = StepTicks(STOCKS, seed=4)
    answers: list[pb.Signal] = []
    channels = {t: grpc.insecure_channel(t) for t in replicated.features}
    try:
        ingest = {t: fpb_grpc.FeaturesStub(ch).Ingest for t, ch in channels.items()}
        with grpc.insecure_channel(replicated.grpc) as gch:
            predict = pb_grpc.SignalsStub(gch).Predict
            for sid in CHECKED:  # each stock's first step opens
                ingest[replicated.owner(sid)](iter([ticks.message([sid])]), timeout=10)
            mget_before = r.info("commandstats").get("cmdstat_mget", {}).get("calls", 0)
            with subscribe.collecting(gch, CHECKED, timeout_s=60) as pushed:
                for step in range(1, STEPS + 1):
                    for sid in CHECKED:
                        summary = ingest[replicated.owner(sid)](iter([ticks.message([sid])]), timeout=10)
                        assert summary.accepted == 1, summary
                        sig = predict(pb.PredictRequest(stock_ids=[sid]), timeout=10).signals[0]
                        assert not sig.error, sig.error
                        assert sig.window_version >= ticks.closed(sid) == step, (sid, step, sig)
                        answers.append(sig)
                assert procs.wait_until(lambda: all(
                    any(s.stock_id == sid and s.window_version == STEPS for s in list(pushed))
                    for sid in CHECKED), 10, 0.01), sorted({(s.stock_id, s.window_version) for s in pushed})
            mget_after = r.info("commandstats").get("cmdstat_mget", {}).get("calls", 0)
    finally:
        for ch in channels.values():
            ch.close()
    assert mget_after == mget_before  # answered from the windows pushed: none read from Redis
    assert {s.tier for s in answers} <= {1, 2} and all(s.received_us > 0 for s in answers)
    # every step of every stock got a signal of its own pushed, from either replica
    got = {(s.stock_id, s.window_version) for s in pushed}
    assert {(sid, v) for sid in CHECKED for v in range(1, STEPS + 1)} <= got
    assert metrics.total(replicated.base, "rtvol_gateway_memory_answers_total") >= len(answers)


def test_universe_ranks_the_stocks_of_every_replica(replicated: Stack) -> None:
    ticks = StepTicks(STOCKS, seed=5, start=1_000)  # later than the other test's steps
    for t in replicated.features:
        ours = [s for s in range(STOCKS) if replicated.owner(s) == t]
        with grpc.insecure_channel(t) as ch:
            ingest = fpb_grpc.FeaturesStub(ch).Ingest
            for _ in range(2):  # a step closed for each of them
                assert ingest(iter([ticks.message(ours)]), timeout=10).accepted == len(ours)
    reply = httpx.get(f"{replicated.base}/v1/universe", params={"top_k": STOCKS}, timeout=10)
    assert reply.status_code == 200, reply.text
    top = reply.json()["top"]
    assert top is not None and sorted(e["stock_id"] for e in top) == list(range(STOCKS))
    scores = [e["score"] for e in top]
    assert scores == sorted(scores, reverse=True)  # one ranking, not one per replica
    few = httpx.get(f"{replicated.base}/v1/universe", params={"top_k": 3}, timeout=10).json()["top"]
    assert few == top[:3]
