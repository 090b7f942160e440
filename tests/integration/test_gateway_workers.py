"""A gateway of two worker processes (services/gateway/workers.py) against real processes
(redis-server, feature service, sidecar): connections land on both workers, /metrics and the
supervisor's metrics port sum both, each changed window is inferred once (by the worker whose
shard holds the stock) and pushed to Subscribe clients of either worker, a killed worker is
replaced while requests keep being answered and its shard is inferred again, and SIGTERM to
the parent stops every worker."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from helpers import metrics, procs, sockets, subscribe

from rtvol.loadtest.feed import replay
from rtvol.loadtest.ticks import StepTicks
from rtvol.proto.v1 import features_pb2_grpc as fpb_grpc
from rtvol.proto.v1 import signals_pb2 as pb
from rtvol.proto.v1 import signals_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration
STOCKS = 8
CONNECTIONS = 16  # all on one of 2 workers: 2 in 2^16
REQUESTS = "rtvol_gateway_request_seconds_count"
INFERRED = "rtvol_gateway_pipeline_signals_total"  # summed over the workers
FIRST_STEP = 5_000  # past the replayed data's steps and sequences, inside the jumps allowed


class Stack:
    def __init__(self, gateway: procs.Proc, base: str, grpc_target: str, metrics_base: str,
                 feature: str) -> None:
        self.gateway, self.base, self.grpc, self.metrics_base = gateway, base, grpc_target, metrics_base
        self.feature = feature
        self.ticks = StepTicks(STOCKS, seed=3, start=FIRST_STEP)

    def workers(self) -> list[int]:
        return sockets.children(self.gateway.pid)


@pytest.fixture(scope="module")
def stack(redis_db: str, tiny_repo: Path, tiny_data: Path,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    metrics_port = procs.free_port()
    with procs.pipeline_stack(tmp_path_factory.mktemp("gateway_workers"), redis_db, tiny_repo, STOCKS,
                              "--workers", "2", "--metrics-port", str(metrics_port),
                              "--drain-seconds", "2") as (feature_url, base, grpc_target, gw):
        replay(feature_url, tiny_data, range(0, 3))
        s = Stack(gw, base, grpc_target, f"http://127.0.0.1:{metrics_port}", feature_url)
        assert procs.wait_until(lambda: sockets.all_listen(gw.pid, 2, _port(base)), 30), s.workers()
        yield s


def _port(target: str) -> int:
    return int(target.rsplit(":", 1)[1])


def test_connections_land_on_both_workers_and_metrics_sum_them(stack: Stack) -> None:
    before = {b: metrics.total(b, REQUESTS) for b in (stack.base, stack.metrics_base)}
    clients = [httpx.Client(base_url=stack.base, timeout=10) for _ in range(CONNECTIONS)]
    try:
        with procs.grpc_channels(stack.grpc, CONNECTIONS) as channels:
            for client, channel in zip(clients, channels, strict=True):  # each on its own connection
                reply = client.post("/v1/predict", json={"stock_ids": [1]})
                assert reply.status_code == 200 and "error" not in reply.json()["signals"][0], reply.text
                sig = pb_grpc.SignalsStub(channel).Predict(pb.PredictRequest(stock_ids=[2]), timeout=10)
                assert not sig.signals[0].error
            for port in (_port(stack.base), _port(stack.grpc)):
                held = {pid: sockets.held(pid, port) for pid in stack.workers()}
                assert len(held) == 2 and all(held.values()), (port, held)
                assert sum(held.values()) >= CONNECTIONS
    finally:
        for client in clients:
            client.close()
    # each scrape (a new connection: either worker) counts the Predicts both workers answered
    for _ in range(4):
        for base in (stack.base, stack.metrics_base):
            assert metrics.total(base, REQUESTS) - before[base] == 2 * CONNECTIONS
    assert metrics.total(stack.metrics_base, "process_cpu_seconds_total") > 0


def _settled(stack: Stack) -> float:
    """The inferred count once it has stopped moving (a snapshot's or an earlier step's batches done)."""
    last = metrics.total(stack.base, INFERRED)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        time.sleep(0.5)
        if (now := metrics.total(stack.base, INFERRED)) == last:
            return now
        last = now
    raise AssertionError("the pipeline kept inferring")


def _close_steps(stack: Stack, rounds: int) -> tuple[list[pb.Signal], float]:
    """``rounds`` Ingest calls, each closing a step of every stock, with a Subscribe client on
    one worker; returns what it was pushed for them and the signals the workers inferred."""
    ids = list(range(STOCKS))
    with grpc.insecure_channel(stack.feature) as fch, grpc.insecure_channel(stack.grpc) as gch:
        ingest = fpb_grpc.FeaturesStub(fch).Ingest
        assert ingest(iter([stack.ticks.message(ids)]), timeout=10).accepted == STOCKS  # may close one
        before = _settled(stack)
        with subscribe.collecting(gch, ids) as pushed:
            began_us = time.time_ns() // 1000
            for _ in range(rounds):
                sent_us = time.time_ns() // 1000
                assert ingest(iter([stack.ticks.message(ids)]), timeout=10).accepted == STOCKS
                assert procs.wait_until(lambda t=sent_us: subscribe.arrived_since(pushed, ids, t), 10, 0.01)
            inferred = _settled(stack) - before
    return [s for s in pushed if s.received_us >= began_us], inferred


def test_each_changed_window_is_inferred_once_and_pushed_on_either_worker(stack: Stack) -> None:
    pushed, inferred = _close_steps(stack, rounds=3)
    assert inferred == 3 * STOCKS  # not once per worker
    assert stack.gateway.tail().count("Traceback") == 0
    for sid in range(STOCKS):  # both shards' signals, one per closed step, in order
        versions = [s.window_version for s in pushed if s.stock_id == sid]
        assert len(versions) == 3 and np.all(np.diff(versions) == 1), (sid, versions)
        assert all(s.tier in (1, 2) and not s.error for s in pushed if s.stock_id == sid)


def test_a_killed_worker_is_replaced_and_requests_keep_being_answered(stack: Stack) -> None:
    victim, survivor = stack.workers()
    logged = stack.gateway.log.stat().st_size
    os.kill(victim, signal.SIGKILL)
    # reaped by the supervisor, so its listening sockets are closed: a zombie is not enough (its
    # leader turns zombie while other threads still exit and hold them; a connection the kernel
    # queues on such a socket meanwhile is reset when it closes)
    assert procs.wait_until(lambda: not Path(f"/proc/{victim}").exists(), 5)
    answered = 0
    while (new := set(stack.workers()) - {victim, survivor}) == set() or not _reaches(stack, *new):
        # a new connection per request: each one reaches a live worker
        reply = httpx.post(stack.base + "/v1/predict", json={"stock_ids": [3]}, timeout=10)
        assert reply.status_code == 200 and "error" not in reply.json()["signals"][0], reply.text
        answered += 1
        assert answered < 2000, _since_the_kill(stack, logged)
    assert survivor in stack.workers() and answered > 0
    # the replacement infers its shard again: every stock's next steps are pushed, once each
    pushed, inferred = _close_steps(stack, rounds=2)
    assert inferred == 2 * STOCKS
    assert {s.stock_id for s in pushed} == set(range(STOCKS))


def _running(pid: int) -> bool:
    """Not gone and not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _since_the_kill(stack: Stack, logged: int) -> str:
    """What a failure keeps: each worker's sockets on the gateway's ports and its threads'
    stacks (py-spy, a dev dependency), and the gateway's log (supervisor and workers) from
    the kill on."""
    ports = {"http": _port(stack.base), "grpc": _port(stack.grpc)}
    held = {pid: {name: (sockets.held(pid, port, sockets.LISTEN), sockets.held(pid, port))
                  for name, port in ports.items()} for pid in stack.workers()}
    with stack.gateway.log.open("rb") as log:
        log.seek(logged)
        text = log.read().decode(errors="replace")
    return (f"workers' (listening, established) sockets: {held}\ngateway log since the kill:\n{text}\n"
            + "\n".join(_stacks(pid) for pid in stack.workers()))


def _stacks(pid: int) -> str:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    try:
        done = subprocess.run([spy, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"no stacks of worker {pid}: {e}"
    return f"worker {pid}:\n{done.stdout}{done.stderr}"


def _reaches(stack: Stack, pid: int) -> bool:
    """Whether worker ``pid`` accepted a new connection (held open while it is looked at) and
    answered a Predict on it."""
    with httpx.Client(base_url=stack.base, timeout=5) as client:
        reply = client.post("/v1/predict", json={"stock_ids": [0]})
        assert reply.status_code == 200 and "error" not in reply.json()["signals"][0], reply.text
        return sockets.held(pid, _port(stack.base)) > 0


def test_sigterm_to_the_parent_stops_every_worker(stack: Stack) -> None:
    workers = stack.workers()
    assert len(workers) == 2
    assert stack.gateway.stop(timeout_s=10) == 0
    assert not [pid for pid in workers if _running(pid)]
    with pytest.raises(grpc.RpcError), grpc.insecure_channel(stack.grpc) as ch:
        pb_grpc.SignalsStub(ch).Predict(pb.PredictRequest(stock_ids=[1]), timeout=2)
