"""`rtvol bench model`: model-only latency per backend, and the sidecar round trip through
tritonclient against bare grpcio echo floors (unary and streaming) measured in the same run.

    rtvol bench model --repo MODELS [--out bench-model.json] [--requests 3000]
"""

from __future__ import annotations

import argparse
import json
import platform
import queue
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from rtvol import histograms, repository
from rtvol.loadtest.bench.launch import Echo, Sidecar
from rtvol.services.model import backends

CANDIDATES = [("onnxruntime-cpu", "fp32"), ("onnxruntime", "fp32"), ("cudagraph-eager", "fp16"),
              ("cudagraph", "fp16"), ("cudagraph", "bf16"), ("cudagraph", "fp32"),
              ("tensorrt", "fp16")]


def latency(fn: Callable[[], object], n: int, warmup: int = 200) -> dict[str, int]:
    """p50/p99/p99.9 in µs from an HDR histogram (rtvol.histograms)."""
    hist = histograms.latency_us()
    for _ in range(warmup):
        fn()
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        histograms.record_s(hist, time.perf_counter() - t0)
    return histograms.summary(hist)


def throughput(fn: Callable[[], object], batch: int, seconds: float = 1.0) -> float:
    fn()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        calls += 1
    return calls * batch / (time.perf_counter() - start)


def model_only(repo: Path, name: str, windows: np.ndarray, n: int,
               candidates: Sequence[tuple[str, str]] = CANDIDATES) -> list[dict[str, Any]]:
    files = backends.ModelFiles(repository.version_dir(repo, name), "window",
                                ("rv", "direction", "momentum"), 1024)
    rows: list[dict[str, Any]] = []
    for backend_name, precision in candidates:
        try:
            backend = backends.create(backend_name, files, precision=precision)
        except backends.BackendUnavailable as e:
            rows.append({"backend": f"{backend_name}-{precision}", "skipped": str(e)})
            continue
        label = backend.name + ("" if precision == "fp32" or precision in backend.name
                                else f"-{precision}")
        if any(r["backend"] == label for r in rows):  # "onnxruntime" without a CUDA provider
            rows.append({"backend": backend_name, "skipped": f"resolves to {label}, measured above"})
            continue
        backend.warmup(backends.batch_buckets(1024))
        infer = backend.infer
        rows.append({"backend": label,
                     "batch1": latency(lambda: infer(windows[:1]), n),  # noqa: B023  (called now)
                     "batch64_per_s": throughput(lambda: infer(windows[:64]), 64),  # noqa: B023
                     "batch1024_per_s": throughput(lambda: infer(windows[:1024]), 1024)})  # noqa: B023
    return rows


def round_trips(repo: Path, name: str, window: np.ndarray, n: int, sidecar_args: Sequence[str]
                ) -> dict[str, Any]:
    import grpc
    import tritonclient.grpc as tc

    from rtvol.loadtest.bench import echo_grpc as echo

    sidecar, floor = Sidecar(repo, sidecar_args), Echo()
    try:
        client = tc.InferenceServerClient(sidecar.url)
        deadline = time.monotonic() + 120
        while not client.is_server_ready():
            if time.monotonic() > deadline:
                raise TimeoutError("sidecar not ready")
            time.sleep(0.1)
        inp = tc.InferInput("window", list(window.shape), "FP32")
        inp.set_data_from_numpy(window)
        payload = window.tobytes() + bytes(64)  # about the size of the serialized request
        results: dict[str, Any] = {"payload_bytes": len(payload)}
        results["sidecar_unary"] = latency(lambda: client.infer(name, [inp]), n)

        replies: queue.Queue[Any] = queue.Queue()
        client.start_stream(callback=lambda result, error: replies.put(error or result))

        def stream_once() -> None:
            client.async_stream_infer(name, [inp])
            reply = replies.get(timeout=10)
            if isinstance(reply, Exception):
                raise reply
        results["sidecar_stream"] = latency(stream_once, n)
        client.stop_stream()

        channel = grpc.insecure_channel(floor.url)
        unary = channel.unary_unary(echo.UNARY)
        results["echo_unary"] = latency(lambda: unary(payload), n)
        outbox: queue.Queue[bytes] = queue.Queue()

        def requests() -> Iterator[bytes]:
            while True:
                yield outbox.get()
        responses = channel.stream_stream(echo.STREAM)(requests())

        def echo_stream_once() -> None:
            outbox.put(payload)
            next(responses)
        results["echo_stream"] = latency(echo_stream_once, n)
        responses.cancel()
        channel.close()
    finally:
        sidecar.stop()
        floor.stop()
    for kind in ("unary", "stream"):
        for q in ("p50_us", "p99_us"):
            results[f"ratio_{kind}_{q[:3]}"] = round(
                results[f"sidecar_{kind}"][q] / results[f"echo_{kind}"][q], 3)
    return results


def table(report: dict[str, Any]) -> str:
    lines = ["model-only (in process)",
             f"{'backend':<28}{'p50 µs':>9}{'p99 µs':>9}{'p99.9 µs':>10}{'b64 inf/s':>14}{'b1024 inf/s':>14}"]
    for row in report["model_only"]:
        if "skipped" in row:
            lines.append(f"{row['backend']:<28}skipped: {row['skipped']}")
            continue
        b = row["batch1"]
        lines.append(f"{row['backend']:<28}{b['p50_us']:>9}{b['p99_us']:>9}{b['p99_9_us']:>10}"
                     f"{row['batch64_per_s']:>14,.0f}{row['batch1024_per_s']:>14,.0f}")
    rt = report["round_trip"]
    lines += ["", f"round trip, batch 1, payload {rt['payload_bytes']} B",
              f"{'path':<28}{'p50 µs':>9}{'p99 µs':>9}{'p99.9 µs':>10}"]
    for key in ("echo_unary", "sidecar_unary", "echo_stream", "sidecar_stream"):
        r = rt[key]
        lines.append(f"{key:<28}{r['p50_us']:>9}{r['p99_us']:>9}{r['p99_9_us']:>10}")
    lines.append(f"ratios to the echo floor: unary p50 {rt['ratio_unary_p50']}x "
                 f"p99 {rt['ratio_unary_p99']}x; stream p50 {rt['ratio_stream_p50']}x "
                 f"p99 {rt['ratio_stream_p99']}x")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    import os

    p = argparse.ArgumentParser(prog="rtvol bench model", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo", type=Path, default=Path(os.environ.get("RTVOL_MODEL_REPOSITORY", "models")))
    p.add_argument("--model", default=repository.DEFAULT_MODEL)
    p.add_argument("--requests", type=int, default=3000, help="timed calls per latency figure")
    p.add_argument("--out", type=Path, default=Path("bench-model.json"))
    p.add_argument("--sidecar-arg", action="append", default=[],
                   help="extra flag for the sidecar, e.g. --sidecar-arg=--max-queue-delay-us=0")
    p.add_argument("--backend", action="append", default=[], metavar="NAME:PRECISION",
                   help="model-only: measure only these, e.g. cudagraph:fp16 (default: every candidate)")
    a = p.parse_args(argv)
    candidates = [(b, prec) for b, _, prec in (x.partition(":") for x in a.backend)] or CANDIDATES
    if unknown := [f"{b}:{prec}" for b, prec in candidates if b not in backends.NAMES or not prec]:
        raise SystemExit(f"--backend {unknown}: NAME:PRECISION with NAME one of {backends.NAMES}")
    if not repository.versions(a.repo, a.model):
        raise SystemExit(f"no model '{a.model}' in {a.repo}: run `rtvol train` first")
    rng = np.random.default_rng(0)
    windows = rng.lognormal(-6, 1, size=(1024, 50, 12)).astype(np.float32)
    report = {"machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs",
              "date": datetime.now(UTC).isoformat(timespec="seconds"),
              "command": "rtvol bench model " + " ".join(argv or []),
              "model_only": model_only(a.repo, a.model, windows, a.requests, candidates),
              "round_trip": round_trips(a.repo, a.model, windows[:1], a.requests, a.sidecar_arg)}
    print(table(report))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved {a.out}")
