"""`rtvol bench gpu`: on a GPU host, one run that prints every figure of the sidecar's GPU
path against its target: backend parity, compile-at-export time, sidecar time-to-ready,
model-only batch 1 and batch 1024, perf_analyzer unary and streaming (with a py-spy
profile of the sidecar during each). Run it from the repository root (it runs the GPU
parity tests under tests/); `make gpu-bench` (scripts/gpu-bench.sh) sets up the host.

    rtvol bench gpu --repo MODELS --perf-analyzer PATH [--py-spy PATH] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from rtvol import repository
from rtvol.loadtest.bench.launch import Sidecar
from rtvol.localproc import grpc_ready, wait_until

SIDECAR = ["--backend", "cudagraph", "--precision", "fp16"]
PARITY_TESTS = ["tests/unit/test_model_backends.py", "tests/unit/test_model_artifact.py"]
# (figure, target, True when higher is better)
TARGETS = {"ready_s": (3.0, False), "batch1_p50_us": (30, False), "batch1024_per_s": (7e6, True),
           "unary_p50_us": (250, False), "unary_p99_us": (500, False),
           "stream_p50_us": (250, False), "stream_p99_us": (500, False)}


def run(cmd: Sequence[str], out: Path, timeout_s: float) -> tuple[int, str, float]:
    """(exit code, output, seconds); the output is also saved as ``out``."""
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    text = done.stdout + done.stderr
    out.write_text(text)
    return done.returncode, text, time.perf_counter() - start


def parity(out: Path) -> dict[str, Any]:
    code, text, _ = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *PARITY_TESTS],
                        out / "parity.log", 900)
    summary = text.strip().splitlines()[-1] if text.strip() else "(no output)"
    return {"passed": code == 0, "summary": summary}  # the summary: "N passed, M skipped"


def time_to_ready(repo: Path, out: Path, label: str) -> dict[str, Any]:
    """Seconds from starting the sidecar process to its health check answering SERVING."""
    start = time.perf_counter()
    proc = Sidecar(repo, SIDECAR, timeout_s=300)
    serving = grpc_ready(proc.url)
    try:
        wait_until(lambda: proc.proc.poll() is not None or serving(), 300, interval_s=0.02)
        seconds = time.perf_counter() - start
        ready = proc.proc.poll() is None and serving()
    finally:
        proc.stop()
        (out / f"sidecar-{label}.log").write_text("".join(proc.output))
    log = "".join(proc.output)
    return {"ready": ready, "seconds": round(seconds, 2) if ready else None,
            "kernels": "artifact" if "compiled packages loaded" in log else "compiled at start"}


def replay_profile(vdir: Path, out: Path) -> dict[str, Any]:
    """The CUDA graph alone (fp16, from the package): GPU time per replay and the kernels
    and copies in one replay, at batch 1 and 1024."""
    import torch
    from torch.autograd import DeviceType

    from rtvol.services.model.backends import ModelFiles, batch_buckets
    from rtvol.services.model.backends.cuda_graph import CudaGraphBackend

    backend = CudaGraphBackend(ModelFiles(vdir, "window", ("rv", "direction", "momentum"), 1024), "fp16")
    backend.warmup(batch_buckets(1024))
    result: dict[str, Any] = {"kernels": backend.source}
    for b in (1, 1024):
        graph, stream = backend.graphs[b], backend.stream
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            with torch.cuda.stream(stream):
                graph.replay()
            stream.synchronize()
        names = [e.name for e in prof.events() if e.device_type == DeviceType.CUDA]
        (out / f"replay-events-b{b}.txt").write_text("\n".join(names) + "\n")
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        with torch.cuda.stream(stream):
            begin.record()
            for _ in range(500):
                graph.replay()
            end.record()
        end.synchronize()
        result[f"batch{b}"] = {"gpu_events": len(names), "replay_us": round(begin.elapsed_time(end) * 2, 1)}
    return result


def perf_analyzer(binary: Path, url: str, inputs: Path, streaming: bool, out: Path,
                  py_spy: Path | None, pid: int) -> dict[str, Any]:
    mode = "stream" if streaming else "unary"
    cmd = [str(binary), "-m", repository.DEFAULT_MODEL, "-u", url, "-i", "grpc",
           *(["--streaming"] if streaming else []), "--input-data", str(inputs), "--shape", "window:50,12",
           "-b", "1", "--measurement-mode", "count_windows", "--measurement-request-count", "3000",
           "--max-trials", "3", "--stability-percentage", "100"]
    profiler = None
    if py_spy is not None:
        profiler = subprocess.Popen([str(py_spy), "record", "--pid", str(pid), "--duration", "6",
                                     "--rate", "500", "--format", "raw", "--nonblocking",
                                     "--output", str(out / f"py-spy-{mode}.txt")],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    env = {**os.environ, "LD_LIBRARY_PATH": f"{binary.parent}:{os.environ.get('LD_LIBRARY_PATH', '')}"}
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    text = done.stdout + done.stderr
    (out / f"perf-analyzer-{mode}.log").write_text(text)
    if profiler is not None:
        profiler.wait(timeout=60)
    found = {q: re.search(rf"p{q} latency: (\d+) usec", text) for q in (50, 90, 99)}
    throughput = re.search(r"Throughput: ([\d.]+) infer/sec", text)
    if done.returncode != 0 or not all(found.values()) or throughput is None:
        return {"error": f"perf_analyzer exit {done.returncode}: {text[-500:]}"}
    return {**{f"p{q}_us": int(m.group(1)) for q, m in found.items() if m},
            "per_s": float(throughput.group(1)), "seconds": round(time.perf_counter() - start, 1)}


def perf_inputs(out: Path) -> Path:
    windows = np.random.default_rng(0).lognormal(-6, 1, size=(16, 50, 12)).astype(np.float32)
    path = out / "perf-input.json"
    path.write_text(json.dumps({"data": [{"window": {"content": w.ravel().tolist(), "shape": [50, 12]}}
                                         for w in windows]}))
    return path


def figures(report: dict[str, Any]) -> dict[str, float | None]:
    rows = report["model"].get("model_only", [])
    model: dict[str, Any] = next((r for r in rows if "batch1" in r
                                  and r.get("backend", "").startswith("torch-cudagraph-fp16")), {})
    pa = report["perf_analyzer"]
    return {"ready_s": report["ready_artifact"].get("seconds"),
            "batch1_p50_us": model.get("batch1", {}).get("p50_us"),
            "batch1024_per_s": model.get("batch1024_per_s"),
            **{f"{mode}_{q}_us": pa.get(mode, {}).get(f"{q}_us")
               for mode in ("unary", "stream") for q in ("p50", "p99")}}


def table(report: dict[str, Any]) -> str:
    lines = [f"GPU bench: {report['gpu']}, torch {report['torch']}, {report['date']}",
             f"parity: {report['parity']}",
             f"compile at export (fp16): {report['compile']}",
             f"replay alone (CUDA events): {report['replay']}",
             f"time to ready without a package (compiling at start): {report['ready_no_artifact']}",
             f"{'figure':<20}{'measured':>14}{'target':>16}  verdict"]
    for name, value in report["figures"].items():
        target, higher = TARGETS[name]
        verdict = "n/a" if value is None else ("met" if (value >= target if higher else value <= target)
                                               else "MISSED")
        shown = "-" if value is None else f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
        lines.append(f"{name:<20}{shown:>14}{(('>= ' if higher else '<= ') + f'{target:,}'):>16}  {verdict}")
    return "\n".join(lines)


def export(repo: Path, out: Path) -> dict[str, Any]:
    code, text, seconds = run([sys.executable, "-m", "rtvol.cli", "export", "--repo", str(repo),
                               "--compile", "--precision", "fp16"], out / "export.log", 1200)
    if code != 0:
        raise RuntimeError(f"rtvol export --compile failed: {text[-1000:]}")
    return {"seconds": round(seconds, 1)}


def model_bench(repo: Path, out: Path, requests: int) -> dict[str, Any]:
    code, text, _ = run([sys.executable, "-m", "rtvol.cli", "bench", "model", "--repo", str(repo),
                         "--requests", str(requests), "--out", str(out / "bench-model.json"),
                         "--backend", "onnxruntime-cpu:fp32", "--backend", "cudagraph:fp16"],
                        out / "bench-model.log", 1200)
    if code != 0:
        raise RuntimeError(f"rtvol bench model failed: {text[-1000:]}")
    print(text, flush=True)
    bench = json.loads((out / "bench-model.json").read_text())
    return {"model_only": bench["model_only"], "round_trip": bench["round_trip"]}


def perf_analyzers(repo: Path, out: Path, binary: Path, py_spy: Path | None) -> dict[str, Any]:
    inputs = perf_inputs(out)
    sidecar = Sidecar(repo, SIDECAR, timeout_s=120)
    try:
        if not wait_until(grpc_ready(sidecar.url), 120):
            raise RuntimeError("sidecar not ready in 120 s")
        return {mode: perf_analyzer(binary, sidecar.url, inputs, mode == "stream", out, py_spy,
                                    sidecar.proc.pid) for mode in ("unary", "stream")}
    finally:
        sidecar.stop()


def without_package(repo: Path, vdir: Path, out: Path) -> dict[str, Any]:
    compiled, off = vdir / "compiled", vdir / "compiled.off"
    compiled.rename(off)
    try:
        return time_to_ready(repo, out, "no-artifact")
    finally:
        off.rename(compiled)


def main(argv: Sequence[str] | None = None) -> None:
    import torch

    p = argparse.ArgumentParser(prog="rtvol bench gpu", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo", type=Path, required=True, help="model repository (rtvol_cnn in it)")
    p.add_argument("--perf-analyzer", type=Path, required=True, help="perf_analyzer binary")
    p.add_argument("--py-spy", type=Path, default=None, help="py-spy binary: profile the sidecar")
    p.add_argument("--requests", type=int, default=5000, help="timed calls per model-only figure")
    p.add_argument("--out", type=Path, default=Path("bench-gpu"))
    p.add_argument("--skip-parity", action="store_true")
    a = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("rtvol bench gpu needs a CUDA device")
    a.out.mkdir(parents=True, exist_ok=True)
    vdir = repository.version_dir(a.repo, repository.DEFAULT_MODEL)
    report: dict[str, Any] = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
                              "date": datetime.now(UTC).isoformat(timespec="seconds"),
                              "command": "rtvol bench gpu " + " ".join(argv or [])}
    steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("parity", lambda: {"summary": "skipped"} if a.skip_parity else parity(a.out)),
        ("compile", lambda: export(a.repo, a.out)),
        ("ready_artifact", lambda: time_to_ready(a.repo, a.out, "artifact")),
        ("model", lambda: model_bench(a.repo, a.out, a.requests)),
        ("perf_analyzer", lambda: perf_analyzers(a.repo, a.out, a.perf_analyzer, a.py_spy)),
        ("ready_no_artifact", lambda: without_package(a.repo, vdir, a.out)),
        ("replay", lambda: replay_profile(vdir, a.out))]  # last: in this process
    for name, step in steps:
        try:
            report[name] = step()
        except Exception as e:  # one broken step must not hide the other figures
            report[name] = {"error": f"{type(e).__name__}: {e}"}
        print(f"{name}:", report[name], flush=True)
        (a.out / "bench-gpu.json").write_text(json.dumps(report, indent=2) + "\n")
    report["figures"] = figures(report)
    (a.out / "bench-gpu.json").write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
