"""Read-your-writes when a gateway's Watch stream stalls, against real processes
(redis-server, feature service, model sidecar, gateway): the stream runs through a TCP relay
the test pauses, so the gateway keeps serving while it reads nothing more. The feature service
drops it for not acknowledging; once Ingest has returned, the gateway's lease ran out and a
Predict answers from the store, with the step, not from the window the gateway still holds.
Once the relay flows again, the gateway follows a new stream and answers from memory again."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import onnxruntime as ort
import pytest
import redis
from helpers import metrics, procs
from helpers.relay import Relay, relay
from helpers.store import stored_windows

from rtvol.loadtest.ticks import StepTicks
from rtvol.proto.v1 import features_pb2_grpc as fpb_grpc
from rtvol.proto.v1 import signals_pb2 as pb
from rtvol.proto.v1 import signals_pb2_grpc as pb_grpc
from rtvol.repository import version_dir

pytestmark = pytest.mark.integration
STOCKS = 4
SID = 1
ACK_TIMEOUT_S = 2.0  # generous for a busy machine: only the paused gateway misses it
LEASE_S = ACK_TIMEOUT_S / 2  # the feature service's default


class Stack:
    def __init__(self, feature: str, grpc_target: str, base: str, redis_url: str, watch: Relay,
                 repo: Path) -> None:
        self.feature, self.grpc, self.base, self.redis_url = feature, grpc_target, base, redis_url
        self.watch, self.repo = watch, repo


@pytest.fixture
def stack(redis_db: str, tiny_repo: Path, tmp_path: Path) -> Iterator[Stack]:
    redis.Redis.from_url(redis_db).flushdb()
    started: list[procs.Proc] = []
    try:
        feature, feature_url = procs.feature_service(tmp_path, redis_db, STOCKS,
                                                     "--watch-ack-timeout-s", str(ACK_TIMEOUT_S))
        started.append(feature)
        model, model_url = procs.sidecar(tmp_path, tiny_repo)
        started.append(model)
        with relay(feature_url) as watch:
            gw, base, grpc_target = procs.gateway(
                tmp_path, tiny_repo, "--redis-url", redis_db, "--model-url", model_url,
                "--feature-url", watch.target, "--stocks", str(STOCKS), *procs.BUSY_MACHINE_BUDGETS)
            started.append(gw)
            yield Stack(feature_url, grpc_target, base, redis_db, watch, tiny_repo)
    finally:
        codes = procs.stop_all(started)  # every one, even when one fails to stop
        assert set(codes.values()) <= {0}, codes


def _mgets(r: redis.Redis) -> int:
    return int(r.info("commandstats").get("cmdstat_mget", {}).get("calls", 0))


def test_a_predict_after_ingest_sees_the_step_while_the_gateways_watch_stalls(stack: Stack) -> None:
    r, ticks = redis.Redis.from_url(stack.redis_url), StepTicks(STOCKS)
    with grpc.insecure_channel(stack.feature) as fch, grpc.insecure_channel(stack.grpc) as gch:
        ingest, predict = fpb_grpc.FeaturesStub(fch).Ingest, pb_grpc.SignalsStub(gch).Predict

        def step_and_predict() -> tuple[pb.Signal, float, int]:
            """Close a step of SID; (the Predict's answer, Ingest's duration, Redis reads)."""
            began = time.monotonic()
            assert ingest(iter([ticks.message([SID])]), timeout=30).accepted == 1
            took, before = time.monotonic() - began, _mgets(r)
            sig = predict(pb.PredictRequest(stock_ids=[SID]), timeout=10).signals[0]
            assert not sig.error, sig.error
            return sig, took, _mgets(r) - before

        ingest(iter([ticks.message([SID])]), timeout=10)  # the first step opens
        held, _, reads = step_and_predict()
        assert held.window_version == ticks.closed(SID) == 1 and reads == 0  # from memory
        stack.watch.pause()  # the gateway serves on but reads no more of its Watch stream
        sig, took, reads = step_and_predict()
        assert ticks.closed(SID) == 2
        assert took >= ACK_TIMEOUT_S  # the gateway was dropped for not acknowledging
        assert took < ACK_TIMEOUT_S + LEASE_S + 5  # bounded: ack timeout + lease (+ a busy machine)
        # the window it holds is a step behind: its lease ran out, the store answered, with the
        # model's output for the stored window (the step's), not the held one's
        assert reads >= 1 and sig.tier in (1, 2)
        # and it says which window: the stored one's version and receipt, as a pushed signal does
        assert sig.window_version == ticks.closed(SID) == 2 and sig.received_us > held.received_us
        session = ort.InferenceSession(str(version_dir(stack.repo, "rtvol_cnn") / "model.onnx"))
        (rv,) = session.run(["rv"], {"window": stored_windows(stack.redis_url, [SID])})
        assert sig.rv == pytest.approx(float(rv[0, 0]), rel=1e-4) and sig.rv != held.rv
        assert metrics.total(stack.base, "rtvol_gateway_memory_lease_lapsed_total") >= 1
        stack.watch.resume()  # the gateway sees its stream ended, reconnects, gets a snapshot

        def from_memory_again() -> bool:  # with the step just closed, from the store or memory
            sig, _, reads = step_and_predict()
            assert sig.window_version == ticks.closed(SID), sig
            return reads == 0

        assert procs.wait_until(from_memory_again, 30, 0.2)
