"""Read-your-writes at step granularity, against real processes (redis-server, feature
service, model sidecar, gateway) under load: once an Ingest call that closes a 12-s step has
returned, a Predict for that stock answers with a signal computed from a window that includes
the step, and the gateway reads no window from Redis to answer it. The same with a gateway of
two worker processes: each follows the Watch stream of its own shard, Ingest returns only after
the worker of the stock acknowledged the window, and either worker answers for any stock.
A Watch call asking for a shard that does not exist is refused, naming the field."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import redis
from helpers import metrics, procs, sockets, subscribe
from helpers.store import stored_windows

from rtvol import sharding
from rtvol.loadtest.ticks import StepTicks
from rtvol.proto.v1 import features_pb2_grpc as fpb_grpc
from rtvol.proto.v1 import signals_pb2 as pb
from rtvol.proto.v1 import signals_pb2_grpc as pb_grpc
from rtvol.repository import version_dir

pytestmark = pytest.mark.integration
STOCKS = 40
CHECKED = list(range(8))  # the stocks whose writes are read back
LOADED = list(range(8, STOCKS))  # the others get a steady feed and Predicts meanwhile


class Stack:
    def __init__(self, feature: str, grpc_target: str, base: str, redis_url: str, repo: Path) -> None:
        self.feature, self.grpc, self.base = feature, grpc_target, base
        self.redis_url, self.repo = redis_url, repo


@pytest.fixture(scope="module", params=[1, 2, "embedded", "embedded-model"],
                ids=["1-worker", "2-workers", "embedded", "embedded-model"])
def stack(request: pytest.FixtureRequest, redis_db: str, tiny_repo: Path,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A gateway of one or two workers, or the feature service and the gateway in one process
    (`rtvol serve embedded`: the Watch stream followed in process, no gRPC hop), the last with
    tier 1's models in that process too (no sidecar)."""
    redis.Redis.from_url(redis_db).flushdb()  # the other parameter's windows and checkpoints
    embedded = str(request.param).startswith("embedded")
    n, in_process = 1 if embedded else int(request.param), request.param == "embedded-model"
    with procs.pipeline_stack(tmp_path_factory.mktemp("read_your_writes"), redis_db, tiny_repo, STOCKS,
                              "--workers", str(n), embedded=embedded,
                              embedded_model=in_process) as (feature_url, base, grpc_target, gw):
        # every worker warm (listening), not only the one /readyz reached
        port = int(base.rsplit(":", 1)[1])
        assert n == 1 or procs.wait_until(lambda: sockets.all_listen(gw.pid, n, port), 30)
        # followed in process exactly when the two share one
        assert metrics.total(base, "rtvol_gateway_watch_in_process") == (1 if embedded else 0)
        yield Stack(feature_url, grpc_target, base, redis_db, tiny_repo)
        if in_process:  # tier 1 answered, computed in this process
            assert metrics.total(base, "rtvol_model_compute_seconds_count") > 0


def _load(stack: Stack, started: threading.Event, stop: threading.Event,
          failures: list[BaseException]) -> None:
    """Batched Ingest messages for LOADED on one long stream, and Predicts for them meanwhile."""
    ticks = StepTicks(STOCKS, seed=1)

    def messages() -> Iterator:  # type: ignore[type-arg]
        while not stop.is_set():
            yield ticks.message(LOADED)
            time.sleep(0.002)

    def predicts() -> None:
        with grpc.insecure_channel(stack.grpc) as ch:
            stub = pb_grpc.SignalsStub(ch)
            while not stop.is_set():
                stub.Predict(pb.PredictRequest(stock_ids=LOADED[:4]), timeout=10)

    try:
        with grpc.insecure_channel(stack.feature) as ch:
            ingest = fpb_grpc.FeaturesStub(ch).Ingest
            ingest(iter([ticks.message(LOADED), ticks.message(LOADED)]), timeout=10)  # a step closed
            started.set()
            reader = threading.Thread(target=predicts, daemon=True)
            reader.start()
            ingest(messages(), timeout=180)  # the whole test: over 60 s with two workers on a busy VM
        reader.join(10)
    except BaseException as e:  # reported by the test
        failures.append(e)


def test_a_predict_after_ingest_sees_the_closed_step(stack: Stack) -> None:
    r = redis.Redis.from_url(stack.redis_url)
    started, stop, failures = threading.Event(), threading.Event(), []
    load = threading.Thread(target=_load, args=(stack, started, stop, failures), daemon=True)
    load.start()
    assert started.wait(10)
    ticks = StepTicks(STOCKS)
    answers: list[tuple[int, pb.Signal]] = []
    try:
        # Predicts take turns over 4 connections: with workers, they reach several of them
        with grpc.insecure_channel(stack.feature) as fch, procs.grpc_channels(stack.grpc, 4) as gchs:
            ingest = fpb_grpc.FeaturesStub(fch).Ingest
            predicts = itertools.cycle([pb_grpc.SignalsStub(ch).Predict for ch in gchs])
            ingest(iter([ticks.message(CHECKED)]), timeout=10)  # each stock's first step opens
            mget_before = r.info("commandstats").get("cmdstat_mget", {}).get("calls", 0)
            for step in range(1, 16):
                for sid in CHECKED:
                    summary = ingest(iter([ticks.message([sid])]), timeout=10)
                    assert summary.accepted == 1, summary
                    sig = next(predicts)(pb.PredictRequest(stock_ids=[sid]), timeout=10).signals[0]
                    assert not sig.error, sig.error
                    assert sig.window_version >= ticks.closed(sid) == step, (sid, step, sig)
                    answers.append((sid, sig))
            mget_after = r.info("commandstats").get("cmdstat_mget", {}).get("calls", 0)
    finally:
        stop.set()
        load.join(30)
    assert not failures, failures
    # no window was read from Redis to answer, but where a worker's signal of its shard came
    # later than the deadline allows to wait for it (each counted)
    stored = metrics.total(stack.base, 'rtvol_gateway_memory_answers_total{result="stored"}')
    assert mget_after - mget_before <= stored
    # the answers are the model's outputs for the windows stored now (the last step of each)
    last = {sid: sig for sid, sig in answers}
    session = ort.InferenceSession(str(version_dir(stack.repo, "rtvol_cnn") / "model.onnx"))
    (rv,) = session.run(["rv"], {"window": stored_windows(stack.redis_url, CHECKED)})
    assert [last[s].rv for s in CHECKED] == pytest.approx(rv[:, 0].tolist(), rel=1e-4)
    assert {s.tier for _, s in answers} <= {1, 2}
    assert all(s.received_us > 0 for _, s in answers)
    assert metrics.total(stack.base, "rtvol_gateway_memory_answers_total") >= len(answers)


def test_pushed_signals_carry_their_window_and_feed_the_tick_to_signal_histogram(stack: Stack) -> None:
    ticks = StepTicks(STOCKS, seed=2, start=100)  # later than the other test's steps
    with grpc.insecure_channel(stack.feature) as fch, grpc.insecure_channel(stack.grpc) as gch:
        ingest = fpb_grpc.FeaturesStub(fch).Ingest
        ingest(iter([ticks.message(CHECKED)]), timeout=10)  # opens (or closes) a step: not timed
        with subscribe.collecting(gch, CHECKED, timeout_s=30) as pushed:
            before = metrics.total(stack.base, "rtvol_gateway_tick_to_signal_seconds_count")
            began_us = time.time_ns() // 1000
            for _ in range(3):
                sent_us = time.time_ns() // 1000
                ingest(iter([ticks.message(CHECKED)]), timeout=10)
                assert procs.wait_until(lambda t=sent_us: subscribe.arrived_since(pushed, CHECKED, t),
                                        10, 0.01)
    for sid in CHECKED:
        mine = [s for s in pushed if s.stock_id == sid and s.received_us >= began_us]  # the timed ones
        assert len(mine) == 3 and all(s.tier in (1, 2) and s.received_us > 0 for s in mine)
        assert np.all(np.diff([s.window_version for s in mine]) == 1)  # one signal per closed step
        assert np.all(np.diff([s.received_us for s in mine]) > 0)
    after = metrics.total(stack.base, "rtvol_gateway_tick_to_signal_seconds_count")
    assert after >= before + 3 * len(CHECKED)


def test_a_watch_of_a_shard_that_does_not_exist_is_refused_naming_the_field(stack: Stack) -> None:
    with grpc.insecure_channel(stack.feature) as ch:
        call = fpb_grpc.FeaturesStub(ch).Watch(iter([]), metadata=[sharding.shard_metadata(2, 2)], timeout=10)
        with pytest.raises(grpc.RpcError) as e:
            next(call)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert sharding.WATCH_SHARD in e.value.details() and "2/2" in e.value.details()
