"""`python -m rtvol.loadtest.fuzz` (`make fuzz`): a hostile client against a whole local stack.

1. schemathesis generates requests from the gateway's OpenAPI document (the REST API);
   no answer may be a 5xx.
2. Malformed protobuf over every gRPC method of the gateway, the feature service and the
   model sidecar: random bytes, truncated and bit-flipped valid messages, for unary and
   streaming methods alike. No answer may be UNKNOWN or INTERNAL.
Then every process must still be the one started (no crash, no supervisor restart); each
one's RSS before and after is reported. The result goes to --out (JSON) and stdout.

Without --repo and --data it makes a tiny synthetic dataset and a 3-epoch model first.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor

from rtvol import stack
from rtvol.features.spec import N_FEATURES, STEPS
from rtvol.loadtest import feed
from rtvol.proto.inference import grpc_service_pb2 as infer_pb
from rtvol.proto.v1 import features_pb2 as features_pb
from rtvol.proto.v1 import signals_pb2 as signals_pb

STOCKS = 4
BAD = {"UNKNOWN", "INTERNAL"}


def _samples() -> dict[str, list[bytes]]:
    """Valid messages per method, the seeds that get truncated and bit-flipped."""
    window = infer_pb.ModelInferRequest(model_name="rtvol_cnn",
                                        raw_input_contents=[bytes(STEPS * N_FEATURES * 4)])
    window.inputs.add(name="window", datatype="FP32", shape=[1, STEPS, N_FEATURES])
    predict = signals_pb.PredictRequest(stock_ids=[0, 1], kelly=True, request_id="r").SerializeToString()
    return {
        "/rtvol.proto.v1.Signals/Predict": [predict],
        "/rtvol.proto.v1.Signals/PredictStream": [predict],
        "/inference.GRPCInferenceService/ModelStreamInfer": [window.SerializeToString()],
        "/inference.GRPCInferenceService/ModelMetadata": [infer_pb.ModelMetadataRequest(name="rtvol_cnn")
                                                          .SerializeToString()],
        "/rtvol.proto.v1.Signals/Subscribe": [signals_pb.SubscribeRequest(stock_ids=[0]).SerializeToString()],
        "/rtvol.proto.v1.Features/GetFeatures": [features_pb.GetFeaturesRequest(stock_ids=[0, 1])
                                                 .SerializeToString()],
        "/rtvol.proto.v1.Features/Universe": [features_pb.UniverseRequest(top_k=2).SerializeToString()],
        "/inference.GRPCInferenceService/ModelInfer": [window.SerializeToString()],
    }


def _mutations(seeds: list[bytes], rng: random.Random) -> Iterator[bytes]:
    while True:
        kind = rng.randrange(4)
        if kind == 0 or not seeds:  # random bytes
            yield rng.randbytes(rng.randrange(0, 64))
        else:
            seed = bytearray(rng.choice(seeds) or b"\x08\x01")
            if kind == 1:  # truncated
                yield bytes(seed[:rng.randrange(len(seed))])
            elif kind == 2:  # bit flips
                for _ in range(rng.randrange(1, 4)):
                    i = rng.randrange(len(seed))
                    seed[i] ^= 1 << rng.randrange(8)
                yield bytes(seed)
            else:  # a length prefix that overruns
                yield bytes(seed) + b"\x0a" + bytes([0xFF] * rng.randrange(1, 10))


def _methods() -> list[tuple[str, str, MethodDescriptor]]:
    """(component, full method path, descriptor) for every method of the three services."""
    out = []
    for component, module, service in (("gateway", signals_pb, "Signals"),
                                       ("feature", features_pb, "Features"),
                                       ("model", infer_pb, "GRPCInferenceService")):
        svc = module.DESCRIPTOR.services_by_name[service]
        for m in svc.methods:
            out.append((component, f"/{svc.full_name}/{m.name}", m))
    return out


def _call(channel: grpc.Channel, path: str, m: MethodDescriptor, payloads: list[bytes]) -> str:
    """One call with raw payloads; its status code name."""
    reply = message_factory.GetMessageClass(m.output_type)
    kw: dict[str, Any] = {"request_serializer": None, "response_deserializer": reply.FromString}
    timeout = 0.3 if m.server_streaming else 2.0  # a valid Subscribe streams until its deadline
    try:
        if m.client_streaming and m.server_streaming:
            list(channel.stream_stream(path, **kw)(iter(payloads), timeout=timeout))
        elif m.client_streaming:
            channel.stream_unary(path, **kw)(iter(payloads), timeout=timeout)
        elif m.server_streaming:
            list(channel.unary_stream(path, **kw)(payloads[0], timeout=timeout))
        else:
            channel.unary_unary(path, **kw)(payloads[0], timeout=timeout)
    except grpc.RpcError as e:
        return str(e.code().name)
    return "OK"


def grpc_fuzz(targets: dict[str, str], messages: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    samples = _samples()
    methods = _methods()
    codes: dict[str, Counter[str]] = {path: Counter() for _, path, _ in methods}
    sent = 0
    channels = {c: grpc.insecure_channel(t) for c, t in targets.items()}
    try:
        gens = {path: _mutations(samples.get(path, []), rng) for _, path, _ in methods}
        while sent < messages:
            for component, path, m in methods:
                n = rng.randrange(1, 4) if m.client_streaming else 1
                payloads = [next(gens[path]) for _ in range(n)]
                codes[path][_call(channels[component], path, m, payloads)] += 1
                sent += n
    finally:
        for ch in channels.values():
            ch.close()
    bad = {p: {k: v for k, v in c.items() if k in BAD} for p, c in codes.items()}
    return {"messages": sent, "methods": len(methods), "codes": {p: dict(c) for p, c in codes.items()},
            "unknown_or_internal": sum(sum(b.values()) for b in bad.values())}


def rest_fuzz(base: str, max_examples: int, workdir: Path) -> dict[str, Any]:
    junit = workdir / "schemathesis.xml"
    done = subprocess.run([sys.executable, "-m", "schemathesis.cli", "run", f"{base}/openapi.json",
                           "--checks", "not_a_server_error", "--max-examples", str(max_examples),
                           "--report", "junit", "--report-junit-path", str(junit), "--seed", "0"],
                          capture_output=True, text=True, timeout=1800, cwd=workdir)  # its cache too
    tail = done.stdout.strip().splitlines()[-12:]
    return {"exit_code": done.returncode, "summary": tail, "passed": done.returncode == 0}


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _model(workdir: Path) -> tuple[Path, Path]:
    from rtvol.training import dataset, synth, train

    data, repo = workdir / "data", workdir / "models"
    synth.write(synth.generate(synth.TINY), data)
    train.run(dataset.load(data, progress=False), repo, train.TrainConfig(epochs=3), progress=False)
    return data, repo


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rtvol.loadtest.fuzz", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, help="Optiver-layout data to feed (default: a tiny synthetic set)")
    p.add_argument("--repo", type=Path, help="model repository (default: a 3-epoch model on the tiny set)")
    p.add_argument("--messages", type=int, default=12_000, help="malformed gRPC messages in all")
    p.add_argument("--rest-examples", type=int, default=200, help="schemathesis examples per operation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("reports/fuzz.json"))
    a = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="rtvol-fuzz-"))
    run_dir = work / "run"
    try:
        data, repo = (a.data, a.repo) if a.data and a.repo else _model(work)
        comps = stack.up(run_dir, repo, stack.Ports.free(), STOCKS)
        by_name = {c.name: c for c in comps}
        feed.replay(by_name["feature"].target, data, range(0, 3))
        pids = {c.name: c.pid for c in comps}
        before = {n: _rss_mb(pid) for n, pid in pids.items()}
        t0 = time.monotonic()
        rest = rest_fuzz(by_name["gateway"].target, a.rest_examples, work)
        ports = json.loads((run_dir / stack.STATE).read_text())["ports"]
        targets = {"gateway": f"127.0.0.1:{ports['gateway_grpc']}", "feature": by_name["feature"].target,
                   "model": by_name["model"].target}
        rpc = grpc_fuzz(targets, a.messages, a.seed)
        after_comps = {c.name: c for c in stack.load(run_dir)}
        alive = {n: after_comps[n].pid == pid and after_comps[n].restarts == 0 and
                 Path(f"/proc/{pid}").exists() for n, pid in pids.items()}
        after = {n: _rss_mb(pid) if alive[n] else None for n, pid in pids.items()}
        result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                  "seconds": round(time.monotonic() - t0), "rest": rest, "grpc": rpc, "alive": alive,
                  "rss_mb_before": before, "rss_mb_after": after}
    finally:
        stack.down(run_dir)
        shutil.rmtree(work, ignore_errors=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2))
    ok = rest["passed"] and rpc["unknown_or_internal"] == 0 and all(alive.values())
    print("\n".join(rest["summary"]))
    print(f"gRPC: {rpc['messages']} malformed messages over {rpc['methods']} methods, "
          f"{rpc['unknown_or_internal']} UNKNOWN/INTERNAL")
    for n in pids:
        print(f"{n:8} alive {alive[n]!s:5}  RSS {before[n]} -> {after[n]} MB")
    print(f"{'PASSED' if ok else 'FAILED'}; details in {a.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
