"""`rtvol bench gateway`'s verdicts: every issue-12 target of the closed loop, met or not,
including the CPU a fresh predict costs the serving processes against the bare echo's own."""

from __future__ import annotations

from rtvol.loadtest.bench.gateway import open_loop_verdict, verdicts

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


def _loop(rate: float, duration_s: float, p50: float, p99: float, errors: int = 0) -> dict:
    scheduled = int(rate * duration_s)
    return {"rate": rate, "duration_s": duration_s, "ok": scheduled - errors, "scheduled": scheduled,
            "error_rate": errors / scheduled, "latency_ms": {"p50": p50, "p99": p99}}


def test_the_open_loop_is_judged_by_the_hosts_target() -> None:
    # the CPU machine: p99 within 3 x p50 at 2,000/s for 30 s
    cpu = open_loop_verdict(_loop(2000, 30, p50=1.0, p99=2.9), gpu=False)
    assert cpu["met"] and cpu["at_target_load"] and cpu["limit"] == "p99 <= 3 x p50, no errors"
    assert not open_loop_verdict(_loop(2000, 30, p50=1.0, p99=3.1), gpu=False)["met"]
    # the GPU host: p99 within 2 ms at 10,000/s, however low p50 is
    gpu = open_loop_verdict(_loop(10000, 30, p50=0.5, p99=1.9), gpu=True)
    assert gpu["met"] and gpu["at_target_load"] and gpu["limit"] == "p99 <= 2 ms, no errors"
    assert not open_loop_verdict(_loop(10000, 30, p50=0.5, p99=2.1), gpu=True)["met"]
    # one error fails it; a slower or shorter run is below the target's load
    assert not open_loop_verdict(_loop(10000, 30, p50=0.5, p99=1.0, errors=1), gpu=True)["met"]
    assert not open_loop_verdict(_loop(2000, 30, p50=0.5, p99=1.0), gpu=True)["at_target_load"]
    assert not open_loop_verdict(_loop(2000, 5, p50=0.5, p99=1.0), gpu=False)["at_target_load"]
