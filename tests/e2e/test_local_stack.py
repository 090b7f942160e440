"""The local stack end to end, through the `rtvol` command: up, feed, predict, push, load, down;
and the one-process stack (no Redis: feature service and gateway share a process and its store)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from rtvol import localproc
from rtvol.loadtest import feed
from rtvol.proto.v1 import signals_pb2 as pb
from rtvol.proto.v1 import signals_pb2_grpc as pb_grpc


def rtvol(*args: str, timeout_s: float = 120) -> str:
    done = subprocess.run([sys.executable, "-m", "rtvol.cli", *args], capture_output=True, text=True,
                          timeout=timeout_s)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def collect_until_quiet(stream: grpc.Future, quiet_s: float, limit_s: float) -> dict[int, pb.Signal]:
    """The last pushed signal per stock, once no push came for ``quiet_s`` (at most ``limit_s``)."""
    last: dict[int, pb.Signal] = {}
    stamp = [time.monotonic()]

    def read() -> None:
        try:
            for sig in stream:
                last[sig.stock_id] = sig
                stamp[0] = time.monotonic()
        except grpc.RpcError:
            pass  # cancelled below

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and (not last or time.monotonic() - stamp[0] < quiet_s):
        time.sleep(0.1)
    stream.cancel()
    reader.join(timeout=5)
    return dict(last)


def up(run_dir: Path, data: Path, repo: Path, *flags: str) -> dict[str, Any]:
    """`rtvol up` on free ports; returns its stack.json."""
    rtvol("up", "--run-dir", str(run_dir), "--repo", str(repo), "--data", str(data), "--free-ports", *flags)
    return dict(json.loads((run_dir / "stack.json").read_text()))


def stock_ids(data: Path) -> list[int]:
    return sorted(int(p.name.split("=")[1]) for p in (data / "book_train.parquet").iterdir())


def feed_predict_and_push(data: Path, feature: str, gateway_grpc: str) -> None:
    """Feed three buckets; Predict answers every stock from tier 1 with features written
    moments ago; one more bucket pushes a signal per stock, equal to what Predict answers."""
    fed = rtvol("feed", "--data", str(data), "--target", feature, "--buckets", "0:3", "--rate", "20000")
    assert "rejected 0" in fed, fed
    stocks = stock_ids(data)
    with grpc.insecure_channel(gateway_grpc) as channel:
        stub = pb_grpc.SignalsStub(channel)
        answered = stub.Predict(pb.PredictRequest(stock_ids=stocks, max_staleness_ms=0), timeout=10)
        assert [s.stock_id for s in answered.signals] == stocks
        for s in answered.signals:
            assert not s.error and not s.stale and s.tier == 1 and s.rv > 0, s
            # written by the feed above, seconds ago at most (the feature service flushes every 5 ms)
            assert 0 <= s.feature_age_ms < 30_000, s

        stream = stub.Subscribe(pb.SubscribeRequest(all=True), timeout=60)
        time.sleep(0.5)  # the subscription must be registered before the change it should see
        feed.replay(feature, data, range(3, 4))
        pushed = collect_until_quiet(stream, quiet_s=1.5, limit_s=20)
        assert set(pushed) == set(stocks)
        now = stub.Predict(pb.PredictRequest(stock_ids=stocks, max_staleness_ms=0), timeout=10)
        for got in now.signals:
            push = pushed[got.stock_id]
            assert push.tier == got.tier == 1
            assert push.rv == pytest.approx(got.rv, rel=1e-5)
            assert [push.direction.down, push.direction.up] == pytest.approx(
                [got.direction.down, got.direction.up], abs=1e-5)


def test_up_feed_predict_push_load_down(tiny_data: Path, tiny_repo: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    state = up(run_dir, tiny_data, tiny_repo)
    pids = [c["pid"] for c in state["components"]]
    ports = state["ports"]
    try:
        assert "ok" in rtvol("status", "--run-dir", str(run_dir))
        feed_predict_and_push(tiny_data, f"127.0.0.1:{ports['feature']}",
                              f"127.0.0.1:{ports['gateway_grpc']}")
        stocks = stock_ids(tiny_data)

        out = tmp_path / "load"
        rtvol("loadtest", "--target", f"grpc://127.0.0.1:{ports['gateway_grpc']}", "--rate", "50",
              "--duration", "2", "--out", str(out), "--stocks", ",".join(map(str, stocks)))
        report = json.loads((out / "report.json").read_text())
        assert report["ok"] == report["scheduled"] == 100 and report["errors"] == {}
        assert 0 < report["latency_ms"]["p50"] <= report["latency_ms"]["p99"] <= report["latency_ms"]["max"]
        assert all((out / f).stat().st_size > 0 for f in ("latency_over_time.png", "percentile_spectrum.png"))

        # the framed Ingest stream `rtvol up` opens: one more bucket over it moves every stock's
        # signal to a newer window by the time the feed's END is answered (read-your-writes)
        with grpc.insecure_channel(f"127.0.0.1:{ports['gateway_grpc']}") as channel:
            stub = pb_grpc.SignalsStub(channel)

            def versions() -> dict[int, int]:
                # any tier may answer (a sidecar slowed by the feed gives tier 2); none stale
                got = stub.Predict(pb.PredictRequest(stock_ids=stocks, max_staleness_ms=0), timeout=10)
                assert all(not s.error and not s.stale for s in got.signals), got
                return {s.stock_id: s.window_version for s in got.signals}

            before = versions()
            fed = rtvol("feed", "--data", str(tiny_data), "--transport", "stream",
                        "--target", f"127.0.0.1:{ports['feature_stream']}", "--buckets", "4:1")
            assert "rejected 0" in fed, fed
            after = versions()
        assert all(after[s] > before[s] for s in stocks), (before, after)
    finally:
        rtvol("down", "--run-dir", str(run_dir))
    assert not [p for p in pids if localproc.alive(p)]
    assert not (run_dir / "stack.json").exists()


def test_no_redis_stack_shares_one_process_and_answers_from_tier_1(tiny_data: Path, tiny_repo: Path,
                                                                   tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    state = up(run_dir, tiny_data, tiny_repo, "--no-redis")
    comps = {c["name"]: c for c in state["components"]}
    ports = state["ports"]
    try:
        assert set(comps) == {"feature", "model", "gateway"}
        assert comps["feature"]["pid"] == comps["gateway"]["pid"] != comps["model"]["pid"]
        status = rtvol("status", "--run-dir", str(run_dir)).splitlines()  # exit 0: every part healthy
        rows = status[1:-1]  # between the header and the supervisor's line
        assert len(rows) == 3 and all(" ok " in row for row in rows), rows
        assert status[-1].startswith("supervisor pid"), status
        feed_predict_and_push(tiny_data, f"127.0.0.1:{ports['feature']}",
                              f"127.0.0.1:{ports['gateway_grpc']}")
        # the gateway sees the feature service's volatility estimate too (tier 3's source)
        universe = f"http://127.0.0.1:{ports['gateway']}/v1/universe"
        assert localproc.wait_until(
            lambda: httpx.get(universe, timeout=5).json()["stock_ids"] == stock_ids(tiny_data), 10, 0.2)
    finally:
        stopped = rtvol("down", "--run-dir", str(run_dir))
    assert "stopped with gateway" in stopped, stopped
    assert not [c["pid"] for c in comps.values() if localproc.alive(c["pid"])]
    assert not (run_dir / "stack.json").exists()


def test_a_killed_sidecar_is_restarted_counted_and_down_stops_everything(
        tiny_data: Path, tiny_repo: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    state = up(run_dir, tiny_data, tiny_repo)
    ports, supervisor = state["ports"], state["supervisor"]["pid"]
    model = next(c for c in state["components"] if c["name"] == "model")
    pids = [c["pid"] for c in state["components"]] + [supervisor]
    try:
        os.kill(model["pid"], signal.SIGKILL)

        def restarted() -> dict[str, Any] | None:
            comps = {c["name"]: c for c in json.loads((run_dir / "stack.json").read_text())["components"]}
            return comps["model"] if comps["model"]["restarts"] == 1 else None

        assert localproc.wait_until(lambda: restarted() is not None, 30, 0.2), (run_dir / "supervisor.log")
        again = restarted()
        assert again is not None and again["pid"] != model["pid"]
        pids.append(again["pid"])
        # ready again on its port; status shows the restart (exit 0: every component healthy)
        assert localproc.wait_until(localproc.grpc_ready(f"127.0.0.1:{ports['model']}"), 60, 0.2)
        rows = {r.split()[0]: r.split() for r in rtvol("status", "--run-dir", str(run_dir)).splitlines()[1:]}
        assert rows["model"][1] == str(again["pid"]) and rows["model"][5] == "1", rows
        assert rows["gateway"][5] == "0" and rows["supervisor"][2] == str(supervisor), rows
        # the gateway finds the restarted sidecar: tier 1 answers again
        feature = f"127.0.0.1:{ports['feature']}"
        rtvol("feed", "--data", str(tiny_data), "--target", feature, "--buckets", "0:2")
        with grpc.insecure_channel(f"127.0.0.1:{ports['gateway_grpc']}") as channel:
            stub = pb_grpc.SignalsStub(channel)

            def tier1() -> bool:
                return stub.Predict(pb.PredictRequest(stock_ids=[0]), timeout=5).signals[0].tier == 1
            assert localproc.wait_until(tier1, 20, 0.2)
    finally:
        stopped = rtvol("down", "--run-dir", str(run_dir))
    assert "supervisor" in stopped, stopped
    assert not [p for p in pids if localproc.alive(p)]
