"""`rtvol bench auth`: what checking API keys adds to a gateway request.

Two gateways, identical but for --api-keys-file (one engine key; the other checks nothing),
read one redis-server fed by one feature service (tier 2 answers fresh predicts: no sidecar,
so the comparison is not diluted by a model hop). The cheapest paths are timed, where the
check is the largest share: the cached signal over REST and gRPC, and a fresh REST predict.
One call at a time, interleaved rounds (loadtest/bench/harness.py's `measure`), p50/p99/p99.9
from HDR histograms. Target (issue 17): with keys p50 <= 1.1 x without, on every path.

    flock /tmp/rtvol-bench.lock rtvol bench auth --repo MODELS [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rtvol import auth, repository, stack
from rtvol.loadtest.bench.gateway import CACHED_MS, _answered, _probe, _rest_tier, dataset
from rtvol.loadtest.bench.harness import Http, Processes, Timed, measure
from rtvol.localproc import free_port, grpc_ready, http_ready, redis_ready, wait_until

LIMIT = 1.1
KEY = auth.new_key()


def start(ps: Processes, repo: Path, stocks: int) -> tuple[str, dict[str, tuple[str, str]]]:
    """The feature service's target and, per gateway ("open", "auth"), (HTTP base, gRPC target)."""
    keys = ps.workdir / "api-keys"
    keys.write_text(f"bench engine {auth.hash_key(KEY)}\n")
    rport, fport = free_port(), free_port()
    ps.start("redis", stack.redis_cmd(rport, ps.workdir), redis_ready(rport))
    redis_url, feature = f"redis://127.0.0.1:{rport}/0", f"127.0.0.1:{fport}"
    ps.start("feature", stack.feature_cmd(fport, 0, redis_url, stocks), grpc_ready(feature))
    gateways = {}
    for name, extra in (("open", []), ("auth", ["--api-keys-file", str(keys)])):
        hport, gport = free_port(), free_port()
        ps.start(f"gateway-{name}", stack.gateway_cmd(hport, gport, repo, "--redis-url", redis_url,
                                                      "--stocks", str(stocks), "--workers", "1", *extra),
                 http_ready(f"http://127.0.0.1:{hport}/readyz"))
        gateways[name] = (f"http://127.0.0.1:{hport}", f"127.0.0.1:{gport}")
    return feature, gateways


def paths(name: str, base: str, target: str, stocks: list[int]) -> tuple[list[Timed], Any]:
    """One gateway's timed paths (named ``*_{name}``), and its gRPC channel to close."""
    import grpc

    from rtvol.proto.v1 import signals_pb2 as pb
    from rtvol.proto.v1 import signals_pb2_grpc as pb_grpc

    n = len(stocks)
    cached = [pb.PredictRequest(stock_ids=[s], max_staleness_ms=CACHED_MS) for s in stocks]
    bodies = [json.dumps({"stock_ids": [s]}).encode() for s in stocks]
    metadata = auth.metadata(KEY if name == "auth" else "")
    rest = Http(base, dict(metadata))
    channel = grpc.insecure_channel(target)
    predict = pb_grpc.SignalsStub(channel).Predict

    def rest_cached(i: int) -> bytes:
        return rest.call("GET", f"/v1/signals/{stocks[i % n]}")

    def rest_predict(i: int) -> bytes:
        return rest.call("POST", "/v1/predict", bodies[i % n])

    def grpc_cached(i: int) -> Any:
        return predict(cached[i % n], metadata=metadata)

    return [Timed(f"rest_cached_{name}", rest_cached, prepare=rest.reconnect),
            Timed(f"rest_predict_{name}", rest_predict, _rest_tier(2), rest.reconnect),
            Timed(f"grpc_cached_{name}", grpc_cached, _answered)], channel


def check_cost_us(keys: Path, calls: int = 200_000) -> dict[str, float]:
    """In-process: µs per credential check (finding the key among a request's headers or
    metadata, the verified-key cache, the role), free of the network and scheduling noise the
    end-to-end paths carry on a shared machine."""
    rules = auth.Rules(frozenset({auth.ENGINE}), {"/livez": auth.OPEN})
    guard = auth.guard("bench", str(keys), rules)
    assert guard is not None
    headers = [(b"host", b"127.0.0.1:8080"), (b"accept-encoding", b"identity"),
               (b"content-length", b"17"), (b"content-type", b"application/json"),
               (b"authorization", f"Bearer {KEY}".encode())]
    metadata = (("user-agent", "grpc-python/1.85.1 grpc-c/52.0.0 (linux; chttp2)"),
                ("authorization", f"Bearer {KEY}"))
    out = {}
    for name, pairs in (("http", headers), ("grpc", metadata)):
        started = time.perf_counter()
        for _ in range(calls):
            assert guard.check("/v1/predict", auth.key_from(pairs)) is None
        out[name] = round((time.perf_counter() - started) / calls * 1e6, 2)
    return out


def verdicts(stats: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for path in ("rest_cached", "rest_predict", "grpc_cached"):
        ratio = stats[f"{path}_auth"]["p50_us"] / stats[f"{path}_open"]["p50_us"]
        rows.append({"path": path, "p50_ratio": round(ratio, 3), "added_p50_us":
                     round(stats[f"{path}_auth"]["p50_us"] - stats[f"{path}_open"]["p50_us"], 1),
                     "limit": LIMIT, "met": ratio <= LIMIT})
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="rtvol bench auth", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo", type=Path, default=Path(os.environ.get("RTVOL_MODEL_REPOSITORY", "models")))
    p.add_argument("--requests", type=int, default=3000, help="timed calls per path")
    p.add_argument("--rounds", type=int, default=6, help="interleaved rounds the calls are split into")
    p.add_argument("--out", type=Path, default=Path("bench-auth.json"))
    a = p.parse_args(argv)
    if not repository.versions(a.repo, repository.DEFAULT_MODEL):
        raise SystemExit(f"no model in {a.repo}: run `rtvol train` first")
    from rtvol.loadtest.feed import replay

    workdir = Path(tempfile.mkdtemp(prefix="rtvol-bench-auth-"))
    ps = Processes(workdir)
    try:
        data, stocks = dataset(None, workdir)
        feature, gateways = start(ps, a.repo, max(stocks) + 1)
        replay(feature, data, range(0, 3))
        probe = Http(gateways["open"][0]), Http(gateways["auth"][0], dict(auth.metadata(KEY)))
        if not wait_until(lambda: all(_probe(c, f"/v1/signals/{s}") for c in probe for s in stocks), 30, 0.2):
            raise SystemExit("the gateways pre-computed no signals within 30 s")
        check_us = check_cost_us(ps.workdir / "api-keys")
        timed, channels = [], []
        for name, (base, target) in gateways.items():
            more, channel = paths(name, base, target, stocks)
            timed += more
            channels.append(channel)
        try:
            measure(timed, a.requests, a.rounds, ps.pids)
        finally:
            for ch in channels:
                ch.close()
    finally:
        ps.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    stats = {t.name: t.stats() for t in timed}
    report: dict[str, Any] = {"machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs",
              "date": datetime.now(UTC).isoformat(timespec="seconds"),
              "command": "rtvol bench auth " + " ".join(argv if argv is not None else sys.argv[1:]),
              "paths": stats, "check_us_in_process": check_us, "targets": verdicts(stats)}
    for name, s in stats.items():
        print(f"{name:<20} p50 {s['p50_us']:>7} µs  p99 {s['p99_us']:>7} µs  p99.9 {s['p99_9_us']:>7} µs"
              f"  n {s['n']}")
    print(f"the check itself, in process: {check_us['http']} µs (HTTP headers), {check_us['grpc']} µs "
          "(gRPC metadata) per call")
    for v in report["targets"]:
        print(f"{v['path']:<14} with keys / without, p50: {v['p50_ratio']:.3f} (+{v['added_p50_us']} µs), "
              f"limit {LIMIT}: {'met' if v['met'] else 'NOT MET'}")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved {a.out}")


if __name__ == "__main__":
    main()
