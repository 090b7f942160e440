"""`rtvol bench gateway`'s verdicts: every issue-12 target of the closed loop, met or not,
including the CPU a fresh predict costs the serving processes against the bare echo's own."""

from __future__ import annotations

from rtvol.loadtest.bench.gateway import verdicts

PATHS = ("http_echo", "grpc_unary_echo", "grpc_stream_echo", "rest_predict", "grpc_predict",
         "grpc_stream_predict", "rest_cached", "grpc_cached", "grpc_stream_cached", "grpc_stream_tier2")


def _paths(**cpu: dict[str, int]) -> dict[str, dict]:
    paths = {name: {"p50_us": 100.0, "p99_us": 200.0, "cpu_us_per_call": {}} for name in PATHS}
    for name, per_process in cpu.items():
        paths[name]["cpu_us_per_call"] = per_process
    return paths


def test_cpu_per_fresh_predict_counts_every_serving_process_against_the_echo_alone() -> None:
    paths = _paths(
        http_echo={"bench client": 300, "gateway": 20, "echo-http": 200},
        rest_predict={"bench client": 300, "redis": 30, "feature": 20, "model": 150, "gateway": 200,
                      "gateway-tier2": 90},  # the tier-2 gateway and the client are not the path
        grpc_stream_echo={"echo-grpc": 100},
        grpc_stream_predict={"model": 120, "gateway": 90})
    rows = {r["target"]: r for r in verdicts(paths, gpu=False)}
    rest = rows["CPU a call, fresh REST predict / HTTP echo's own"]
    assert rest["value"] == 2.0 and rest["met"]  # (30 + 20 + 150 + 200) / 200
    stream = rows["CPU a call, fresh PredictStream / stream echo's own"]
    assert stream["value"] == 2.1 and not stream["met"]


def test_an_echo_without_measured_cpu_is_not_met() -> None:
    rows = verdicts(_paths(rest_predict={"gateway": 100}), gpu=False)
    rest = next(r for r in rows if r["target"].startswith("CPU a call, fresh REST"))
    assert not rest["met"]
