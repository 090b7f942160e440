"""The local stack end to end, through the `rtvol` command: up, feed, predict, push, load, down."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest

from loadtest import feed
from rtvol import localproc
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


def test_up_feed_predict_push_load_down(tiny_data: Path, tiny_repo: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    rtvol("up", "--run-dir", str(run_dir), "--repo", str(tiny_repo), "--data", str(tiny_data), "--free-ports")
    state = json.loads((run_dir / "stack.json").read_text())
    pids = [c["pid"] for c in state["components"]]
    ports = state["ports"]
    try:
        assert "ok" in rtvol("status", "--run-dir", str(run_dir))
        feature = f"127.0.0.1:{ports['feature']}"
        fed = rtvol("feed", "--data", str(tiny_data), "--target", feature, "--buckets", "0:3",
                    "--rate", "20000")
        assert "rejected 0" in fed, fed
        stocks = sorted(int(p.name.split("=")[1]) for p in (tiny_data / "book_train.parquet").iterdir())

        with grpc.insecure_channel(f"127.0.0.1:{ports['gateway_grpc']}") as channel:
            stub = pb_grpc.SignalsStub(channel)
            answered = stub.Predict(pb.PredictRequest(stock_ids=stocks, max_staleness_ms=0), timeout=10)
            assert [s.stock_id for s in answered.signals] == stocks
            assert all(not s.error and s.tier == 1 and s.rv > 0 for s in answered.signals), answered

            stream = stub.Subscribe(pb.SubscribeRequest(all=True), timeout=60)
            time.sleep(0.5)  # the subscription must be registered before the change it should see
            feed.replay(feature, tiny_data, range(3, 4))
            pushed = collect_until_quiet(stream, quiet_s=1.5, limit_s=20)
            assert set(pushed) == set(stocks)
            now = stub.Predict(pb.PredictRequest(stock_ids=stocks, max_staleness_ms=0), timeout=10)
            for got in now.signals:
                push = pushed[got.stock_id]
                assert push.tier == got.tier == 1
                assert push.rv == pytest.approx(got.rv, rel=1e-5)
                assert [push.direction.down, push.direction.up] == pytest.approx(
                    [got.direction.down, got.direction.up], abs=1e-5)

        out = tmp_path / "load"
        rtvol("loadtest", "--target", f"grpc://127.0.0.1:{ports['gateway_grpc']}", "--rate", "50",
              "--duration", "2", "--out", str(out), "--stocks", ",".join(map(str, stocks)))
        report = json.loads((out / "report.json").read_text())
        assert report["ok"] == report["scheduled"] == 100 and report["errors"] == {}
        assert 0 < report["latency_ms"]["p50"] <= report["latency_ms"]["p99"] <= report["latency_ms"]["max"]
        assert all((out / f).stat().st_size > 0 for f in ("latency_over_time.png", "percentile_spectrum.png"))
    finally:
        rtvol("down", "--run-dir", str(run_dir))
    assert not [p for p in pids if localproc.alive(p)]
    assert not (run_dir / "stack.json").exists()
