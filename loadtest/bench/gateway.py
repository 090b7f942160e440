"""`rtvol bench gateway`: every gateway path against the bare echo of its transport, in one run.

Starts real processes on free loopback ports: redis-server, the feature service, the model
sidecar, the gateway, a second gateway without a sidecar (tier 2 only), a bare FastAPI echo
on the gateway's own HTTP server settings (loadtest/bench/echo_http.py) and the sidecar
benchmark's bare grpcio echo servers (unary and bidirectional stream). It feeds a few
buckets of market data, then times one call at a time (keep-alive http.client, grpcio's
sync client; every answer checked for the tier it claims) in interleaved rounds, so that
machine noise hits every path alike. p50/p99/p99.9 come from HDR histograms. Targets:

  REST predict, 1 stock, fresh (read-your-writes: the pipeline's signal from the newest
  window, held in the gateway's memory)              p50 <= 1.3 x the HTTP echo
  PredictStream, 1 stock, fresh                      p50 <= 1.3 x the stream echo
  cached signal: REST GET /v1/signals/ID, gRPC Predict and PredictStream with
  max_staleness_ms (served from the pre-computed signal)  p50 <= 1.2 x its transport's echo
  tier 2 adds: PredictStream answered by tier 2 (ONNX Runtime in the gateway: the second
  gateway, as when the sidecar is down) minus the same request answered from the cached
  signal: what computing the answer in the gateway costs (feature read, ONNX Runtime,
  building the signal) over returning one, p50  <= 60 µs
  CPU per fresh predict: the serving processes' CPU a call (redis, feature service, sidecar,
  gateway; whatever they spend meanwhile counts, idle workers included)  <= 2 x the echo's own
  CPU a call: REST predict against the HTTP echo, PredictStream against the stream echo
  open loop, gRPC Predict and REST predict (loadtest/), 30 s: no errors and
    on the CPU machine at 2,000/s                    p99 <= 3 x p50
    on a GPU host (nvidia-smi present) at 10,000/s    p99 <= 2 ms
  (a shorter or slower run prints its verdict marked below the target's load)
  on a GPU host only: REST predict p50 <= 1 ms, p99 <= 2 ms

Prints a table and writes JSON (--out). Run latency benchmarks one at a time:

    flock /tmp/rtvol-bench.lock rtvol bench gateway --repo MODELS [--data DIR] [--out FILE]
    python -m rtvol.loadtest.bench.gateway ...    (the same, where the rtvol command is not installed)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rtvol import repository, stack
from rtvol.loadtest import fanout
from rtvol.loadtest.bench.harness import (
    CLIENT,
    Http,
    Processes,
    StreamCaller,
    Timed,
    cpu_seconds,
    has_gpu,
    measure,
    metric_samples,
    run_info,
)
from rtvol.loadtest.report import generator_line
from rtvol.localproc import free_port, grpc_ready, http_ready, redis_ready, wait_until

CACHED_MS = 3_600_000  # max_staleness_ms that lets the pre-computed signal answer
TIER2_BUDGET_US = 60.0
# the open loop's targets by host: (requests/s, p99 limit in ms; None: 3 x p50), held for 30 s
OPEN_LOOP_TARGET = {False: (2000.0, None), True: (10000.0, 2.0)}
OPEN_LOOP_S = 30.0
# the processes a fresh predict runs through (not the bench client, the echoes or the tier-2 gateway)
SERVING = ("redis", "feature", "model", "gateway")


@dataclass
class Targets:
    redis_url: str
    feature: str
    gateway_http: str
    gateway_grpc: str
    tier2_grpc: str
    echo_http: str
    echo_grpc: str


def start_all(ps: Processes, repo: Path, stocks: int, backend: str, gateway_args: Sequence[str],
              workers: int = 1) -> Targets:
    from rtvol.loadtest.bench.launch import Echo  # the sidecar benchmark's grpcio echo floors

    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server not on PATH: the predict paths read the feature store "
                         "(apt-get install redis-server, or put a redis-server binary on PATH)")
    rport = free_port()
    ps.start("redis", stack.redis_cmd(rport, ps.workdir), redis_ready(rport))
    redis_url = f"redis://127.0.0.1:{rport}/0"
    fport, mport = free_port(), free_port()
    feature, model = f"127.0.0.1:{fport}", f"127.0.0.1:{mport}"
    ps.start("feature", stack.feature_cmd(fport, 0, redis_url, stocks), grpc_ready(feature))
    ps.start("model", stack.sidecar_cmd(mport, 0, repo, "--backend", backend), grpc_ready(model))
    common = ["--redis-url", redis_url, "--stocks", str(stocks), *gateway_args]
    gateways = {}
    # the gateway follows the feature service's Watch stream (the pipeline: a fresh Predict is a
    # memory read of the signal of the latest window); the tier-2 one reads the store per request
    # --workers: the gateway's worker processes (the tier-2 one stays one process)
    piped = ["--model-url", model, "--feature-url", feature, "--workers", str(workers)]
    for name, extra in (("gateway", piped), ("gateway-tier2", ["--workers", "1"])):
        hport, gport = free_port(), free_port()
        ps.start(name, stack.gateway_cmd(hport, gport, repo, *common, *extra),
                 http_ready(f"http://127.0.0.1:{hport}/readyz"))
        gateways[name] = (f"http://127.0.0.1:{hport}", f"127.0.0.1:{gport}")
    eport = free_port()
    ps.start("echo-http", [sys.executable, "-m", "rtvol.loadtest.bench.echo_http", "--port", str(eport)],
             http_ready(f"http://127.0.0.1:{eport}/livez"))
    echo = Echo()
    ps.procs.append(echo)
    ps.pids["echo-grpc"] = echo.proc.pid
    return Targets(redis_url, feature, *gateways["gateway"], gateways["gateway-tier2"][1],
                   f"http://127.0.0.1:{eport}", echo.url)


def dataset(data: Path | None, workdir: Path) -> tuple[Path, list[int]]:
    """``data`` (default: a small synthetic set written to ``workdir``) and its stock ids."""
    from rtvol.training import optiver, synth

    if data is None:
        data = workdir / "data"
        synth.write(synth.generate(replace(synth.TINY, stocks=8, time_ids=6)), data)
    return data, [int(s) for s in optiver.stock_ids(data)]


# ---- the paths ------------------------------------------------------------------------------

def _tier(want: int) -> Callable[[Any], bool]:
    def check(reply: Any) -> bool:
        return bool(reply.signals[0].tier == want and not reply.signals[0].error)
    return check


def _answered(reply: Any) -> bool:
    return not reply.signals[0].error


def _rest_tier(want: int) -> Callable[[bytes], bool]:
    def check(body: bytes) -> bool:
        return bool(json.loads(body)["signals"][0].get("tier") == want)
    return check


# how the gateway answered, from its own counters: a held stock from memory (current signal,
# waited for its batch, computed from the held window, or from the store), any other from the
# signal cache when a staleness bound allows it (hit) or computed (miss)
SOURCES = {"rtvol_gateway_memory_answers_total": "memory", "rtvol_gateway_cache_total": "cache"}


def _answer_sources(http_base: str) -> dict[str, float]:
    return {f"{SOURCES[x.name]} {x.labels['result']}": x.value for x in metric_samples(http_base)
            if x.name in SOURCES}


def sequential(t: Targets, stocks: list[int], requests: int, rounds: int, pids: dict[str, int]
               ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every path's latency, and how the gateway answered them by its counters (a held stock's
    cached call is a memory read of its current signal, not a cache lookup)."""
    import grpc

    from rtvol.loadtest.bench import echo_grpc as echo
    from rtvol.proto.v1 import signals_pb2 as pb
    from rtvol.proto.v1 import signals_pb2_grpc as pb_grpc

    ids = [[s] for s in stocks]
    fresh = [pb.PredictRequest(stock_ids=i) for i in ids]
    cached = [pb.PredictRequest(stock_ids=i, max_staleness_ms=CACHED_MS) for i in ids]
    bodies = [json.dumps({"stock_ids": i}).encode() for i in ids]
    payload = pb.PredictResponse(signals=[pb.Signal(stock_id=1, rv=1e-3, model="rtvol_cnn", version="1",
                                                    tier=1, feature_age_ms=1.0)]).SerializeToString()
    n = len(stocks)
    channels = [grpc.insecure_channel(u) for u in (t.echo_grpc, t.gateway_grpc, t.tier2_grpc)]
    echo_ch, gw_ch, tier2_ch = channels
    gw, tier2 = pb_grpc.SignalsStub(gw_ch), pb_grpc.SignalsStub(tier2_ch)
    echo_stream = StreamCaller(echo_ch.stream_stream(echo.STREAM))
    gw_stream, tier2_stream = StreamCaller(gw.PredictStream), StreamCaller(tier2.PredictStream)
    echo_unary = echo_ch.unary_unary(echo.UNARY)
    echo_http, gw_http = Http(t.echo_http), Http(t.gateway_http)
    paths = [
        Timed("http_echo", lambda i: echo_http.call("POST", "/echo", bodies[i % n]),
              prepare=echo_http.reconnect),
        Timed("grpc_unary_echo", lambda i: echo_unary(payload)),
        Timed("grpc_stream_echo", lambda i: echo_stream(payload)),
        Timed("rest_predict", lambda i: gw_http.call("POST", "/v1/predict", bodies[i % n]), _rest_tier(1),
              gw_http.reconnect),
        Timed("grpc_predict", lambda i: gw.Predict(fresh[i % n]), _tier(1)),
        Timed("grpc_stream_predict", lambda i: gw_stream(fresh[i % n]), _tier(1)),
        Timed("rest_cached", lambda i: gw_http.call("GET", f"/v1/signals/{stocks[i % n]}"),
              prepare=gw_http.reconnect),
        # a cached signal of any tier (the cache-hit count below shows they were cached)
        Timed("grpc_cached", lambda i: gw.Predict(cached[i % n]), _answered),
        Timed("grpc_stream_cached", lambda i: gw_stream(cached[i % n]), _answered),
        Timed("grpc_stream_tier2", lambda i: tier2_stream(fresh[i % n]), _tier(2)),
    ]
    sources_before = _answer_sources(t.gateway_http)
    try:
        measure(paths, requests, rounds, pids)
    finally:
        for s in (echo_stream, gw_stream, tier2_stream):
            s.close()
        for ch in channels:
            ch.close()
    sources = _answer_sources(t.gateway_http)
    served = {"answer_sources": {k: int(v - sources_before.get(k, 0.0)) for k, v in sorted(sources.items())
                               if v > sources_before.get(k, 0.0)},
            "cached_grpc_calls": sum(p.calls for p in paths if p.name.endswith("_cached")
                                     and p.name.startswith("grpc"))}
    return {p.name: p.stats() for p in paths}, served


# ---- open loop ------------------------------------------------------------------------------

def open_loop(t: Targets, stocks: list[int], rate: float, duration_s: float, grpc_connections: int,
              pids: dict[str, int], processes: int = 1, gpu: bool = False) -> dict[str, Any]:
    """gRPC then REST at ``rate``, the schedule split over ``processes`` generator processes; the
    servers' CPU and the generator's own are reported apart; each judged by the host's target."""
    from rtvol.loadtest import report, run

    out = {}
    for name, target in (("grpc", f"grpc://{t.gateway_grpc}"), ("http", t.gateway_http)):
        plan = run.Plan(target, duration_s, stocks, max_inflight=512, grpc_connections=grpc_connections,
                        processes=processes)
        before = cpu_seconds(pids)
        res = run.measure(plan, rate)
        s = report.summary(res, target)
        # the servers' CPU; the generator's own (this process or its children) is s["generator"]
        s["cpu_us_per_request"] = {k: round((v - before.get(k, v)) / max(1, res.scheduled) * 1e6)
                                   for k, v in cpu_seconds(pids).items()
                                   if v - before.get(k, v) > 0 and k != CLIENT}
        out[name] = {**s, **open_loop_verdict(s, gpu)}
    return out


def open_loop_verdict(s: dict[str, Any], gpu: bool) -> dict[str, Any]:
    """The open loop's summary judged by the host's target: no errors, and p99 within 3 x p50
    (CPU machine) or 2 ms (GPU host); at the target's load when it ran at its rate for 30 s."""
    lat = s["latency_ms"]
    target_rate, p99_ms = OPEN_LOOP_TARGET[gpu]
    limit = 3 * lat["p50"] if p99_ms is None else p99_ms
    return {"p99_over_p50": round(lat["p99"] / lat["p50"], 2) if lat["p50"] else None,
            "limit": f"p99 <= {'3 x p50' if p99_ms is None else f'{p99_ms:g} ms'}, no errors",
            "p99_limit_ms": limit,
            "met": bool(s["ok"] and s["error_rate"] == 0 and lat["p99"] <= limit),
            "at_target_load": s["rate"] >= target_rate and s["duration_s"] >= OPEN_LOOP_S}


# ---- verdicts -------------------------------------------------------------------------------

def verdicts(p: dict[str, dict[str, Any]], gpu: bool) -> list[dict[str, Any]]:
    """Each target: the measured value, the limit it is held to, met or not."""
    def p50(name: str) -> float:
        return p[name]["p50_us"]

    def ratio(name: str, floor: float, limit: float, what: str) -> dict[str, Any]:
        value = p50(name) / floor
        return {"target": what, "value": round(value, 2), "limit": limit, "unit": "x",
                "met": value <= limit}

    rows = [
        ratio("rest_predict", p50("http_echo"), 1.3, "REST predict, fresh, p50 / HTTP echo"),
        ratio("grpc_stream_predict", p50("grpc_stream_echo"), 1.3, "PredictStream, fresh, p50 / stream echo"),
        ratio("rest_cached", p50("http_echo"), 1.2, "REST cached signal p50 / HTTP echo"),
        ratio("grpc_cached", p50("grpc_unary_echo"), 1.2, "gRPC Predict, cached, p50 / unary echo"),
        ratio("grpc_stream_cached", p50("grpc_stream_echo"), 1.2,
              "PredictStream, cached, p50 / stream echo"),
    ]
    for name, echo, proc, what in (("rest_predict", "http_echo", "echo-http", "REST predict / HTTP echo"),
                                   ("grpc_stream_predict", "grpc_stream_echo", "echo-grpc",
                                    "PredictStream / stream echo")):
        serving = sum(p[name]["cpu_us_per_call"].get(k, 0) for k in SERVING)
        own = p[echo]["cpu_us_per_call"].get(proc, 0)
        value = serving / own if own else float("inf")
        rows.append({"target": f"CPU a call, fresh {what}'s own",
                     "value": round(value, 2), "limit": 2.0, "unit": "x", "met": value <= 2.0})
    added = p50("grpc_stream_tier2") - p50("grpc_stream_cached")
    rows.append({"target": "tier 2 adds (PredictStream p50, tier 2 - cached)", "value": added,
                 "limit": TIER2_BUDGET_US, "unit": "µs", "met": added <= TIER2_BUDGET_US})
    for q, limit in (("p50_us", 1000.0), ("p99_us", 2000.0)):
        value = p["rest_predict"][q]
        rows.append({"target": f"GPU host: REST predict {q[:-3]}", "value": value, "limit": limit,
                     "unit": "µs", "met": value <= limit if gpu else None})
    return rows


def open_loop_rows(loops: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The open loop's verdicts as target rows (p99 against its limit; errors fail it)."""
    return [{"target": f"open loop {name} {s['rate']:,.0f}/s p99 (errors: {s['scheduled'] - s['ok']})",
             "value": s["latency_ms"]["p99"], "limit": s["p99_limit_ms"], "unit": "ms", "met": s["met"],
             "at_target_load": s["at_target_load"]} for name, s in loops.items()]


def table(report: dict[str, Any]) -> str:
    lines = [f"{'path':<22}{'p50 µs':>9}{'p99 µs':>9}{'p99.9 µs':>10}{'n':>7}{'off':>5}  CPU µs per call"]
    for name, s in report["paths"].items():
        cpu = " ".join(f"{k} {v}" for k, v in s["cpu_us_per_call"].items())
        lines.append(f"{name:<22}{s['p50_us']:>9}{s['p99_us']:>9}{s['p99_9_us']:>10}{s['n']:>7}"
                     f"{s['off_path']:>5}  {cpu} (total {sum(s['cpu_us_per_call'].values())})")
    lines += ["", f"{'target':<56}{'value':>11}{'limit':>11}  result"]
    for v in report["targets"]:
        result = "n/a (no GPU)" if v["met"] is None else "met" if v["met"] else "NOT MET"
        if v.get("at_target_load") is False:
            result += " (below the target's load)"
        unit = v["unit"]
        lines.append(f"{v['target']:<56}{v['value']:>8.2f} {unit:<2}{v['limit']:>8.2f} {unit:<2}  {result}")
    for name, s in report.get("open_loop", {}).items():
        lat = s["latency_ms"]
        errors = ", ".join(f"{k} {v}" for k, v in s["errors"].items()) or "none"
        verdict = "met" if s["met"] else "NOT MET"
        if not s["at_target_load"]:
            verdict += " (below the target's load)"
        lines.append(f"open loop {name} {s['rate']:,.0f}/s: {s['ok']:,}/{s['scheduled']:,} ok, p50 "
                     f"{lat['p50']:.2f} ms p99 {lat['p99']:.2f} ms (p99/p50 {s['p99_over_p50']}; target "
                     f"{s['limit']}), errors {errors}: {verdict}; CPU µs per request "
                     + " ".join(f"{k} {v}" for k, v in s["cpu_us_per_request"].items())
                     + "; " + generator_line(s["generator"]))
    sources = ", ".join(f"{k} {v:,}" for k, v in report["answer_sources"].items()) or "none"
    lines.append(f"answers by source, the gateway's counters over the sequential paths: {sources} "
                 f"(cached gRPC calls made: {report['cached_grpc_calls']:,}); load average (1 min) "
                 f"{report['load_average_1m']}; "
                 f"gateway workers {report['gateway_workers']}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="rtvol bench gateway", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo", type=Path, default=Path(os.environ.get("RTVOL_MODEL_REPOSITORY", "models")),
                   help="model repository [env RTVOL_MODEL_REPOSITORY; default models]")
    p.add_argument("--model", default=repository.DEFAULT_MODEL)
    p.add_argument("--data", type=Path, default=None,
                   help="Optiver-layout data to feed (default: a small synthetic set)")
    p.add_argument("--requests", type=int, default=2000, help="timed calls per path")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds the calls are split into")
    p.add_argument("--rate", type=float, default=2000, help="open-loop requests/s (0: skip the open loop)")
    p.add_argument("--duration", type=float, default=5.0, help="open-loop seconds per API")
    p.add_argument("--backend", default="auto", help="model sidecar backend")
    p.add_argument("--workers", type=int, default=1, help="the gateway's worker processes (its --workers)")
    p.add_argument("--grpc-connections", type=int, default=4,
                   help="open loop: gRPC connections the calls take turns on, in all (REST opens what it "
                        "needs)")
    p.add_argument("--processes", default="1",
                   help="open loop: generator processes the schedule is split over (N or auto, as "
                        "`rtvol loadtest --processes`)")
    p.add_argument("--gateway-arg", action="append", default=[],
                   help="extra flag for both gateways, e.g. --gateway-arg=--fanin-max-inflight=2")
    p.add_argument("--keep", action="store_true", help="keep the run directory (logs)")
    p.add_argument("--out", type=Path, default=Path("bench-gateway.json"))
    a = p.parse_args(argv)
    try:
        processes = fanout.processes_arg(a.processes)
    except ValueError as e:
        p.error(f"--processes {a.processes!r}: {e}")
    if not repository.versions(a.repo, a.model):
        raise SystemExit(f"no model '{a.model}' in {a.repo}: run `rtvol train` first")
    from rtvol.loadtest.feed import replay
    from rtvol.services.gateway.httpserver import PARSER

    workdir = Path(tempfile.mkdtemp(prefix="rtvol-bench-gateway-"))
    ps = Processes(workdir)
    load_before = os.getloadavg()
    try:
        data, stocks = dataset(a.data, workdir)
        t = start_all(ps, a.repo, max(stocks) + 1, a.backend, a.gateway_arg, a.workers)
        replay(t.feature, data, range(0, 3))  # three buckets: every stock has a window
        # the pre-computed signals the cached paths read
        cache = Http(t.gateway_http)
        if not wait_until(lambda: all(_probe(cache, f"/v1/signals/{s}") for s in stocks), 30, 0.2):
            raise SystemExit("the gateway pre-computed no signals within 30 s")
        paths, served = sequential(t, stocks, a.requests, a.rounds, ps.pids)
        loops = (open_loop(t, stocks, a.rate, a.duration, a.grpc_connections, ps.pids, processes, has_gpu())
                 if a.rate > 0 else {})
    finally:
        ps.stop()
        if not a.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    gpu = has_gpu()
    report = {**run_info("gateway", argv), "http_parser": PARSER, "sidecar_backend": a.backend,
              "gateway_workers": a.workers, "grpc_connections": a.grpc_connections,
              "generator_processes": processes,
              "load_average_1m": {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)},
              "paths": paths, "targets": verdicts(paths, gpu) + open_loop_rows(loops), "open_loop": loops,
              **served}
    print(table(report))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved {a.out}")


def _probe(client: Http, path: str) -> bool:
    try:
        client.call("GET", path)
    except RuntimeError:
        return False
    return True


if __name__ == "__main__":
    main()
