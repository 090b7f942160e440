"""Several pipeline batches out at once (the gateway's --pipeline-inflight), against real
processes (redis-server, feature service, model sidecar, gateway). The gateway reaches the
sidecar through a TCP relay the test pauses, so the batches formed meanwhile are all out at
once; once it flows again, every step closed gets a signal of its own on a Subscribe stream,
per stock in window-version order, and the calls were out together (their hop stamps overlap)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis
from helpers import procs
from helpers.relay import Relay, relay

from rtvol.loadtest.ticks import StepTicks
from rtvol.pipeline_hops import HOPS
from rtvol.proto.v1 import features_pb2_grpc as fpb_grpc
from rtvol.proto.v1 import signals_pb2 as pb
from rtvol.proto.v1 import signals_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration
STOCKS = 6
INFLIGHT = 3
# while the relay is paused: stocks 0, 1, 2 fill the three slots; 0's next step waits for its own
# batch to settle; 3 and 4 wait for a slot; 1's next step waits too
PAUSED_STEPS = [0, 1, 2, 0, 3, 4, 1]


class Stack:
    def __init__(self, feature: str, grpc_target: str, model: Relay) -> None:
        self.feature, self.grpc, self.model = feature, grpc_target, model


@pytest.fixture
def stack(redis_db: str, tiny_repo: Path, tmp_path: Path) -> Iterator[Stack]:
    redis.Redis.from_url(redis_db).flushdb()
    started: list[procs.Proc] = []
    try:
        feature_url, model_url = procs.upstreams(tmp_path, redis_db, tiny_repo, STOCKS, started)
        with relay(model_url) as model:
            # a paused call is slow, never failed: the timeout far above the pause; the sidecar's
            # own time (what the budget judges) stays small; no readiness probe during the pause
            gw, _, grpc_target = procs.gateway(
                tmp_path, tiny_repo, "--redis-url", redis_db, "--model-url", model.target,
                "--feature-url", feature_url, "--stocks", str(STOCKS), "--pipeline-inflight", str(INFLIGHT),
                "--deadline-ms", "8000", "--model-timeout-ms", "6000", "--model-latency-budget-ms", "100",
                "--model-probe-s", "60")
            started.append(gw)
            yield Stack(feature_url, grpc_target, model)
    finally:
        codes = procs.stop_all(started)  # every one, even when one fails to stop
        assert set(codes.values()) <= {0}, codes


@contextlib.contextmanager
def _pushed(channel: grpc.Channel) -> Iterator[list[pb.Signal]]:
    """The signals pushed for every stock, with their hop stamps, as they arrive."""
    pushed: list[pb.Signal] = []
    stream = pb_grpc.SignalsStub(channel).Subscribe(
        pb.SubscribeRequest(stock_ids=list(range(STOCKS)), hops=True), timeout=60)

    def collect() -> None:
        with contextlib.suppress(grpc.RpcError):  # cancelled below
            pushed.extend(stream)

    reader = threading.Thread(target=collect, daemon=True)
    reader.start()
    time.sleep(0.3)  # registered before the first step
    try:
        yield pushed
    finally:
        stream.cancel()
        reader.join(10)


def _caught_up(pushed: list[pb.Signal], ticks: StepTicks) -> bool:
    last = {s.stock_id: s.window_version for s in list(pushed)}
    return all(last.get(sid) == ticks.closed(sid) for sid in range(STOCKS))


def test_batches_out_at_once_give_each_step_its_own_signal_in_version_order(stack: Stack) -> None:
    ticks = StepTicks(STOCKS)
    everyone = list(range(STOCKS))
    with grpc.insecure_channel(stack.feature) as fch, grpc.insecure_channel(stack.grpc) as gch:
        ingest = fpb_grpc.FeaturesStub(fch).Ingest
        ingest(iter([ticks.message(everyone)]), timeout=10)  # the first step opens
        with _pushed(gch) as pushed:
            ingest(iter([ticks.message(everyone)]), timeout=10)  # closes it: version 1 of each
            assert procs.wait_until(lambda: _caught_up(pushed, ticks), 30, 0.01)
            stack.model.pause()
            for sid in PAUSED_STEPS:  # each its own Ingest call: its own Watch batch and wake-up
                assert ingest(iter([ticks.message([sid])]), timeout=10).accepted == 1
                time.sleep(0.05)
            time.sleep(0.2)
            stack.model.resume()
            assert procs.wait_until(lambda: _caught_up(pushed, ticks), 30, 0.01), \
                [(s.stock_id, s.window_version) for s in pushed]
    for sid in everyone:  # every step its own signal, once, in version order
        versions = [s.window_version for s in pushed if s.stock_id == sid]
        assert versions == list(range(1, ticks.closed(sid) + 1)), (sid, versions)
    assert {s.tier for s in pushed} == {1}  # slow calls, not failed ones: no tier 2
    # the first calls of the pause were out together: each started before any of them ended
    first = [next(s for s in pushed if s.stock_id == sid and s.window_version == 2) for sid in (0, 1, 2)]
    start, end = HOPS.index("call_start"), HOPS.index("call_end")
    assert max(s.hops_us[start] for s in first) < min(s.hops_us[end] for s in first), \
        [tuple(s.hops_us) for s in first]
    assert len({s.hops_us[start] for s in first}) == INFLIGHT  # three batches, not one
