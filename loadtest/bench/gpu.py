"""`rtvol bench gpu`: on a GPU host, one run that prints every figure of the GPU path against
its target: parity (model backends, the stored compile cache, the Triton feature kernels and
the online state on both devices), the Triton feature kernels against numpy (`rtvol bench
features --gpu`: one online round, and the offline windows training builds with ``--device
cuda``), compile-at-export time, sidecar time-to-ready (with the
stored compile cache and without), model-only batch 1 and batch 1024, perf_analyzer unary
and streaming (with a py-spy profile of the sidecar during each, and the server's CPU per
call), the same against a bare KServe echo in each gRPC server shape (`transport`: the
floor under the sidecar, loadtest/bench/echo_kserve.py), the feature service's
ingest on both devices and their crossover (`rtvol bench ingest-devices`), and issue 12's
figures with the sidecar on the GPU: `rtvol bench pipeline` (50,000 updates/s over 500
stocks, 200,000 over 8,000; single and batched) and `rtvol bench gateway` (open loop).
Run it from the repository root (it runs the GPU tests under tests/; the pipeline and
gateway steps need redis-server on PATH); `make gpu-bench` (scripts/gpu-bench.sh) sets up
the host. ``--steps`` runs a subset.

    rtvol bench gpu --repo MODELS --perf-analyzer PATH [--py-spy PATH] [--out DIR] [--steps a,b]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from rtvol import repository
from rtvol.loadtest.bench.launch import Child, Sidecar
from rtvol.localproc import grpc_ready, wait_until

SIDECAR = ["--backend", "cudagraph", "--precision", "fp16"]  # ready once its graphs are warm
# the steps that also run without a GPU (the sidecar then on ONNX Runtime's CPU provider): to try
# them before a device call, and to compare server changes on the CPU machine
CPU_STEPS = {"perf_analyzer", "transport"}
CPU_SIDECAR = ["--backend", "onnxruntime-cpu"]
# ready on ONNX Runtime (CPU) at once, then the CUDA graphs take over
STAGED = ["--backend", "cudagraph-staged", "--precision", "fp16"]
TAKE_OVER = "serves from now on"  # the staged backend's log line
PARITY_TESTS = ["tests/unit/test_model_backends.py", "tests/unit/test_model_artifact.py",
                "tests/unit/test_triton_kernels.py", "tests/unit/test_online_limits.py",
                "tests/unit/test_online_parity.py", "tests/unit/test_staged_backend.py",
                "tests/unit/test_fused_cnn.py"]
# issue 12's pipeline figures on the GPU host: (step, updates/s, stocks, modes, seconds or None
# for --pipeline-seconds, then any further bench pipeline flags). One Ingest stream of
# single-update messages carried 2,200-4,900 messages/s on the H200 host (2026-12-02): at
# 50,000 updates/s, 4 s of them (200,000 messages) outran the feeder's 100-s deadline; 200,000
# updates/s single (800,000) could never finish. So the full rates go in 100-update messages,
# and the single-update stream runs 1 s.
PIPELINES = (("pipeline_50k", 50_000, 500, "batched", None),
             # two pipeline batches out per gateway worker (task INFL), beside the default one
             ("pipeline_50k_inflight2", 50_000, 500, "batched", None, "--gateway-arg=--pipeline-inflight=2"),
             # the windows in the requests, as before system shared memory (the A of an A/B)
             ("pipeline_50k_no_shm", 50_000, 500, "batched", None, "--no-shm"),
             # whole windows on the Watch stream, as before they went as their newest rows
             ("pipeline_50k_whole_windows", 50_000, 500, "batched", None, "--gateway-arg=--no-watch-rows"),
             ("pipeline_50k_single", 50_000, 500, "single", 1.0),
             # single updates on the framed Ingest stream (task FRAME: ~39,000 messages/s on 2 cores)
             ("pipeline_50k_single_stream", 50_000, 500, "single", None, "--transports", "stream"),
             ("pipeline_200k", 200_000, 8_000, "batched", None),
             ("pipeline_200k_stream", 200_000, 8_000, "batched", None, "--transports", "stream"),
             ("pipeline_200k_stream_whole_windows", 200_000, 8_000, "batched", None, "--transports", "stream",
              "--gateway-arg=--no-watch-rows"),
             # the same over 4 feature replicas (one feature service was the queue at 200k)
             ("pipeline_50k_r4", 50_000, 500, "batched", None, "--feature-replicas", "4"),
             ("pipeline_200k_r4", 200_000, 8_000, "batched", None, "--feature-replicas", "4"))
# the transport step's server shapes (label, echo_kserve.py arguments, environment)
TRANSPORT_SHAPES: tuple[tuple[str, list[str], dict[str, str]], ...] = (
    ("aio-pb", ["--shape", "aio-pb"], {}),
    ("aio-raw", ["--shape", "aio-raw"], {}),
    ("aio-pb-rtvol-wrapped", ["--shape", "aio-pb", "--wrapped"], {}),
    ("sync-pb", ["--shape", "sync-pb"], {}),
    ("sync-raw", ["--shape", "sync-raw"], {}),
    ("sync-raw-1thread", ["--shape", "sync-raw", "--threads", "1"], {}))
# (figure, target, True when higher is better)
TARGETS = {"ready_s": (3.0, False), "batch1_p50_us": (30, False), "batch1024_per_s": (7e6, True),
           "unary_p50_us": (250, False), "unary_p99_us": (500, False),
           "stream_p50_us": (250, False), "stream_p99_us": (500, False), "offline_x_numpy": (50, True)}


def run(cmd: Sequence[str], out: Path, timeout_s: float, env: dict[str, str] | None = None
        ) -> tuple[int, str, float]:
    """(exit code, output, seconds); the output is also saved as ``out``."""
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    text = done.stdout + done.stderr
    out.write_text(text)
    return done.returncode, text, time.perf_counter() - start


def parity_start(out: Path) -> subprocess.Popen[str]:
    """The GPU tests, in the background: they compile, like the export they run beside."""
    # the GPU's tests only (the rest run in `make test`); bf16 (not the default precision)
    # only through the backends' parity, not a second export: the whole bench fits one device call
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", *PARITY_TESTS,
           "--deselect", f"{PARITY_TESTS[1]}::test_cuda_graph_backend_serves_the_exported_cache[bf16]"]
    return subprocess.Popen(cmd, stdout=(out / "parity.log").open("w"), stderr=subprocess.STDOUT, text=True)


def parity_finish(proc: subprocess.Popen[str], out: Path) -> dict[str, Any]:
    code = proc.wait(timeout=900)
    text = (out / "parity.log").read_text()
    summary = text.strip().splitlines()[-1] if text.strip() else "(no output)"
    return {"passed": code == 0, "summary": summary}  # the summary: "N passed, M skipped"


def bench_with_targets(name: str, args: Sequence[str], out: Path) -> dict[str, Any]:
    """Another `rtvol bench` (it prints its own table and verdicts); its targets met. Its run
    directory, with every service's log, is kept under ``out``/``name``."""
    report, logs = out / f"{name}.json", out / name
    logs.mkdir(exist_ok=True)
    code, text, seconds = run([sys.executable, "-m", "rtvol.cli", "bench", *args, "--keep",
                               "--out", str(report)], out / f"{name}.log", 600,
                              env={**os.environ, "TMPDIR": str(logs.resolve())})
    print(text[-4000:], flush=True)
    if code != 0 or not report.exists():
        return {"error": f"exit {code}: {text[-800:]}"}
    targets = json.loads(report.read_text()).get("targets", [])
    met = [t for t in targets if t.get("met")]
    return {"targets_met": f"{len(met)} of {len(targets)}", "seconds": round(seconds, 1),
            "missed": [t["target"] for t in targets if t.get("met") is False]}


def ingest_devices(out: Path) -> dict[str, Any]:
    # two universes keep the step under a minute; `rtvol bench ingest-devices` alone runs the full grid
    code, text, _ = run([sys.executable, "-m", "rtvol.cli", "bench", "ingest-devices",
                         "--universes", "500,8000", "--out", str(out / "ingest-devices.json")],
                        out / "ingest-devices.log", 600)
    print(text, flush=True)
    if code != 0:
        return {"error": f"exit {code}: {text[-800:]}"}
    return {"crossover": json.loads((out / "ingest-devices.json").read_text())["crossover"]}


def feature_kernels(out: Path) -> dict[str, Any]:
    """`rtvol bench features --gpu`: its JSON (the ratios to numpy, transfers included)."""
    code, text, _ = run([sys.executable, "-m", "rtvol.loadtest.bench.features_gpu"],
                        out / "features-gpu.log", 600)
    print(text, flush=True)
    if code != 0:
        return {"error": f"exit {code}: {text[-800:]}"}
    result: dict[str, Any] = json.loads(text[text.index("{"):])
    return result


def spy_on(py_spy: Path | None, pid: int, seconds: float, rate: int, path: Path
           ) -> subprocess.Popen[bytes] | None:
    """py-spy sampling ``pid`` without pausing it (raw folded stacks in ``path``)."""
    if py_spy is None:
        return None
    return subprocess.Popen([str(py_spy), "record", "--pid", str(pid), "--duration", str(seconds),
                             "--rate", str(rate), "--format", "raw", "--nonblocking", "--output", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def answer_error(url: str, vdir: Path) -> float:
    """The sidecar's answer for 64 fresh windows against ONNX Runtime's fp32 reference, as the
    parity tests judge half precision: the largest |got - want| / max(|want|, the output's
    RMS) over every output (<= 1e-2 passes)."""
    import onnxruntime as ort
    import tritonclient.grpc as tc

    windows = np.random.default_rng().lognormal(-6, 1, size=(64, 50, 12)).astype(np.float32)
    session = ort.InferenceSession(str(vdir / repository.MODEL_FILE), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    want = dict(zip(names, session.run(names, {"window": windows}), strict=True))
    inp = tc.InferInput("window", list(windows.shape), "FP32")
    inp.set_data_from_numpy(windows)
    got = tc.InferenceServerClient(url).infer(repository.DEFAULT_MODEL, [inp])
    return max(float((np.abs(got.as_numpy(k) - w) / np.maximum(np.abs(w), np.sqrt(np.mean(w ** 2)))).max())
               for k, w in want.items())


def time_to_ready(repo: Path, out: Path, label: str, py_spy: Path | None = None,
                  backend: Sequence[str] = STAGED) -> dict[str, Any]:
    """Seconds from starting the sidecar process to its health check answering SERVING, as a
    new pod: with empty local compile caches (this host's hold what the export compiled).
    The staged backend answers on ONNX Runtime (CPU) until its CUDA graphs take over: both
    answers are checked against the fp32 reference, and the take-over time reported. Then
    SIGTERM: its exit code and how long it took. With ``py_spy``, the start is sampled
    (100 Hz, not paused): where its seconds go."""
    caches = Path(tempfile.mkdtemp(prefix=f"rtvol-ready-{label}-"))
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(caches / "inductor"),
           "TRITON_CACHE_DIR": str(caches / "triton")}
    vdir = repository.version_dir(repo, repository.DEFAULT_MODEL)
    start = time.perf_counter()
    proc = Sidecar(repo, backend, timeout_s=300, env=env)
    listening = time.perf_counter() - start  # imports and the gRPC server, before the model
    profiler = spy_on(py_spy, proc.proc.pid, 120, 100, out / f"py-spy-start-{label}.txt")
    serving = grpc_ready(proc.url)
    result: dict[str, Any] = {"listening_s": round(listening, 2)}
    try:
        wait_until(lambda: proc.proc.poll() is not None or serving(), 300, interval_s=0.02)
        seconds = time.perf_counter() - start
        ready = proc.proc.poll() is None and serving()
        result |= {"ready": ready, "seconds": round(seconds, 2) if ready else None}
        if ready:
            result["error_at_ready"] = answer_error(proc.url, vdir)
            # only the staged backend hands over (ready on ONNX Runtime, then the CUDA graphs)
            handed = "cudagraph-staged" in backend and wait_until(
                lambda: any(TAKE_OVER in line or "failed to start" in line for line in proc.output),
                120, interval_s=0.02)
            if handed and any(TAKE_OVER in line for line in proc.output):
                result["gpu_serving_s"] = round(time.perf_counter() - start, 2)
                result["error_on_gpu"] = answer_error(proc.url, vdir)
    finally:
        stopping = time.perf_counter()
        result["sigterm_exit"] = proc.stop(timeout_s=30)
        result["sigterm_s"] = round(time.perf_counter() - stopping, 2)
        if profiler is not None:
            profiler.wait(timeout=60)  # it writes its profile once the sidecar is gone
        shutil.rmtree(caches, ignore_errors=True)
        (out / f"sidecar-{label}.log").write_text("".join(proc.output))
    output = "".join(proc.output)
    kernels = re.search(r"kernels: (.*)", output)
    cache = re.search(r"compile cache loaded .* in ([\d.]+ s)", output)
    return {**result, "kernels": kernels.group(1).strip() if kernels else "not logged",
            "cache_load": cache.group(1) if cache else "not loaded"}


def replay_profile(vdir: Path, out: Path) -> dict[str, Any]:
    """The CUDA graph alone (fp16, from the package): GPU time per replay and the kernels
    and copies in one replay, at batch 1 and 1024."""
    import torch
    from torch.autograd import DeviceType

    from rtvol.services.model.backends import ModelFiles, batch_buckets
    from rtvol.services.model.backends.cuda_graph import CudaGraphBackend

    backend = CudaGraphBackend(ModelFiles(vdir, "window", ("rv", "direction", "momentum"), 1024), "fp16")
    backend.warmup(batch_buckets(1024))
    result: dict[str, Any] = {"kernels": backend.source}  # in this process: after the export
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def perf_analyzer(binary: Path, url: str, inputs: Path, streaming: bool, out: Path,
                  py_spy: Path | None, pid: int, label: str = "", timeout_s: float = 120) -> dict[str, Any]:
    """perf_analyzer c1 batch 1 against ``url``; also the server's CPU per call (its CPU time
    over the run divided by the calls perf_analyzer counted, warm-up trials included)."""
    mode = f"{label}{'stream' if streaming else 'unary'}"
    cmd = [str(binary), "-m", repository.DEFAULT_MODEL, "-u", url, "-i", "grpc",
           *(["--streaming"] if streaming else []), "--input-data", str(inputs), "--shape", "window:50,12",
           "-b", "1", "--measurement-mode", "count_windows", "--measurement-request-count", "3000",
           "--max-trials", "3", "--stability-percentage", "100"]
    profiler = spy_on(py_spy, pid, 6, 500, out / f"py-spy-{mode}.txt")
    env = {**os.environ, "LD_LIBRARY_PATH": f"{binary.parent}:{os.environ.get('LD_LIBRARY_PATH', '')}"}
    start, cpu_before = time.perf_counter(), cpu_seconds(pid)
    try:  # a bounded run: a server that never answers must not hold the other steps
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"perf_analyzer still running after {timeout_s:g} s"}
    cpu = cpu_seconds(pid) - cpu_before
    text = done.stdout + done.stderr
    (out / f"perf-analyzer-{mode}.log").write_text(text)
    if profiler is not None:
        profiler.wait(timeout=60)
    found = {q: re.search(rf"p{q} latency: (\d+) usec", text) for q in (50, 90, 99)}
    throughput = re.search(r"Throughput: ([\d.]+) infer/sec", text)
    if done.returncode != 0 or not all(found.values()) or throughput is None:
        return {"error": f"perf_analyzer exit {done.returncode}: {text[-500:]}"}
    calls = sum(int(n) for n in re.findall(r"Request count: (\d+)", text))
    return {**{f"p{q}_us": int(m.group(1)) for q, m in found.items() if m},
            "per_s": float(throughput.group(1)), "seconds": round(time.perf_counter() - start, 1),
            "server_cpu_us_per_call": round(cpu / calls * 1e6) if calls else None}


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
            "offline_x_numpy": report["features"].get("offline_ratio"),
            **{f"{mode}_{q}_us": pa.get(mode, {}).get(f"{q}_us")
               for mode in ("unary", "stream") for q in ("p50", "p99")}}


def table(report: dict[str, Any]) -> str:
    lines = [f"GPU bench: {report['gpu']}, torch {report['torch']}, {report['date']}",
             f"parity: {report['parity']}",
             f"compile at export (fp16): {report['compile']}",
             f"replay alone (CUDA events): {report['replay']}",
             f"time to ready, staged (ONNX Runtime first), stored compile cache: {report['ready_artifact']}",
             f"time to ready, cudagraph (ready once warm), stored compile cache: {report['ready_warm']}",
             f"time to ready, staged, no stored cache (compiling at start): {report['ready_no_artifact']}",
             f"Triton feature kernels vs numpy (bench features --gpu): {report['features']}",
             f"feature service ingest, CPU vs GPU (bench ingest-devices): {report['ingest']}",
             *(f"issue 12, {name} (sidecar on the GPU): {report[name]}"
               for name in (*(p[0] for p in PIPELINES), "gateway")),
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
                         "--backend", "onnxruntime-cpu:fp32", "--backend", "cudagraph:fp16",
                         # the round trip through a sidecar already on the GPU: `auto` (staged)
                         # would answer on ONNX Runtime while its CUDA graphs build
                         *(f"--sidecar-arg={arg}" for arg in SIDECAR)],
                        out / "bench-model.log", 1200)
    if code != 0:
        raise RuntimeError(f"rtvol bench model failed: {text[-1000:]}")
    print(text, flush=True)
    bench = json.loads((out / "bench-model.json").read_text())
    return {"model_only": bench["model_only"], "round_trip": bench["round_trip"]}


def perf_analyzers(repo: Path, out: Path, binary: Path, py_spy: Path | None,
                   sidecar_args: Sequence[str] = SIDECAR) -> dict[str, Any]:
    inputs = perf_inputs(out)
    sidecar = Sidecar(repo, sidecar_args, timeout_s=120)
    try:
        if not wait_until(grpc_ready(sidecar.url), 120):
            raise RuntimeError("sidecar not ready in 120 s")
        return {mode: perf_analyzer(binary, sidecar.url, inputs, mode == "stream", out, py_spy,
                                    sidecar.proc.pid) for mode in ("unary", "stream")}
    finally:
        sidecar.stop()


def transport_floors(repo: Path, out: Path, binary: Path) -> dict[str, Any]:
    """perf_analyzer against each KServe echo shape (echo_kserve.py): the transport's floor."""
    inputs = perf_inputs(out)
    result: dict[str, Any] = {}
    for label, args, env in TRANSPORT_SHAPES:
        echo = Child([sys.executable, "-m", "rtvol.loadtest.bench.echo_kserve", "--repo", str(repo), *args],
                     30, env)
        try:
            result[label] = {mode: perf_analyzer(binary, echo.url, inputs, mode == "stream", out, None,
                                                 echo.proc.pid, f"echo-{label}-")
                             for mode in ("unary", "stream")}
        finally:
            echo.stop()
        print(f"transport {label}: {result[label]}", flush=True)
    return result


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
    p.add_argument("--requests", type=int, default=3000, help="timed calls per model-only figure")
    p.add_argument("--pipeline-seconds", type=float, default=4.0, help="bench pipeline --duration per mode")
    p.add_argument("--feature-device", default="cpu", choices=("cpu", "cuda"),
                   help="the feature service's --device in the pipeline step (default cpu: faster "
                        "than cuda at every size bench ingest-devices measured, docs/BENCHMARKS.md)")
    p.add_argument("--gateway-rate", type=float, default=10_000, help="bench gateway open-loop requests/s")
    p.add_argument("--gateway-seconds", type=float, default=30.0,
                   help="bench gateway open-loop seconds per API (the target's: 30)")
    p.add_argument("--gateway-workers", type=int, default=1,
                   help="the gateway's worker processes in the gateway and pipeline steps (their "
                        "--workers): at 200,000 upd/s one worker is the queue once the feature "
                        "service keeps up")
    p.add_argument("--generator-processes", default="auto",
                   help="the open-loop generator's processes in the gateway step (bench gateway "
                        "--processes: a count or auto); raise it when the bench warns a generator "
                        "process neared a full core")
    p.add_argument("--out", type=Path, default=Path("bench-gpu"))
    p.add_argument("--steps", default="", help="only these steps, comma-separated (default: all)")
    a = p.parse_args(argv)
    gpu = torch.cuda.is_available()
    if not gpu and not (a.steps and set(a.steps.split(",")) <= CPU_STEPS):
        raise SystemExit("rtvol bench gpu needs a CUDA device (without one: --steps "
                         f"{','.join(sorted(CPU_STEPS))})")
    a.out.mkdir(parents=True, exist_ok=True)
    vdir = repository.version_dir(a.repo, repository.DEFAULT_MODEL)
    report: dict[str, Any] = {"gpu": torch.cuda.get_device_name() if gpu
                              else "none (the sidecar on ONNX Runtime, CPU)", "torch": torch.__version__,
                              "date": datetime.now(UTC).isoformat(timespec="seconds"),
                              "command": "rtvol bench gpu " + " ".join(argv or [])}
    sidecar_on_gpu = ["--repo", str(a.repo), "--backend", "cudagraph"]
    pipelines = [(name, functools.partial(bench_with_targets, name, [
        "pipeline", *sidecar_on_gpu, "--rate", str(rate), "--stocks", str(stocks),
        "--modes", modes, "--duration", str(seconds or a.pipeline_seconds),
        f"--feature-arg=--device={a.feature_device}", "--workers", str(a.gateway_workers), *extra], a.out))
        for name, rate, stocks, modes, seconds, *extra in PIPELINES]
    steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        # the generic path's compile cache (rtvol_cnn in fp16 runs one fused kernel, compiling
        # nothing); beside the parity tests (both compile); ready_no_artifact needs it
        ("compile", lambda: export(a.repo, a.out)),
        ("parity", lambda: parity_finish(tests, a.out) if tests else {}),
        ("ready_artifact", lambda: time_to_ready(a.repo, a.out, "artifact", a.py_spy)),
        ("ready_warm", lambda: time_to_ready(a.repo, a.out, "warm", backend=SIDECAR)),
        ("model", lambda: model_bench(a.repo, a.out, a.requests)),
        ("perf_analyzer", lambda: perf_analyzers(a.repo, a.out, a.perf_analyzer, a.py_spy,
                                                 SIDECAR if gpu else CPU_SIDECAR)),
        ("transport", lambda: transport_floors(a.repo, a.out, a.perf_analyzer)),
        ("features", lambda: feature_kernels(a.out)),
        ("ingest", lambda: ingest_devices(a.out)),
        *pipelines,
        ("gateway", lambda: bench_with_targets("gateway", [
            "gateway", *sidecar_on_gpu, "--rate", str(a.gateway_rate), "--requests", "1000",
            "--duration", str(a.gateway_seconds), "--workers", str(a.gateway_workers),
            "--processes", a.generator_processes,
            # the kernel spreads connections, not calls, over the workers: two per worker
            "--grpc-connections", str(max(4, 2 * a.gateway_workers))], a.out)),
        ("ready_no_artifact", lambda: without_package(a.repo, vdir, a.out)),
        ("replay", lambda: replay_profile(vdir, a.out))]  # last: in this process
    chosen = set(a.steps.split(",")) if a.steps else {name for name, _ in steps}
    if unknown := chosen - {name for name, _ in steps}:
        raise SystemExit(f"--steps: unknown {sorted(unknown)}; steps: {[name for name, _ in steps]}")
    tests = parity_start(a.out) if "parity" in chosen else None
    for name, step in steps:
        if name not in chosen:
            report[name] = {"skipped": True}
            continue
        try:
            report[name] = step()
        except Exception as e:  # one broken step must not hide the other figures
            report[name] = {"error": f"{type(e).__name__}: {e}"}
        print(f"{name}:", report[name], flush=True)
        (a.out / "bench-gpu.json").write_text(json.dumps(report, indent=2) + "\n")
    report["figures"] = figures(report)
    (a.out / "bench-gpu.json").write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
