"""perf_analyzer, batch 1, concurrency 1, against a real tritonserver (Python backend running
our model.onnx with ONNX Runtime, as tests/integration/test_triton_sidecar.py serves it) and
against rtvol's sidecar on the same exported model, unary and streaming: what the gateway's
tier-1 latency budget has to cover (docs/DEPLOY.md). perf_analyzer reports p50/p90/p95/p99.

    make tritonserver perf-analyzer
    PYTHONPATH=. .venv/bin/python scripts/bench_tritonserver.py [--requests 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import procs, triton
from helpers.models import MODEL, export_random

PA_DIR = Path(os.environ.get("RTVOL_PERF_ANALYZER_DIR", "build/perf_analyzer")).resolve()


def perf_analyzer(target: str, inputs: Path, requests: int, streaming: bool) -> dict[str, float]:
    cmd = [str(PA_DIR / "perf_analyzer"), "-m", MODEL, "-u", target, "-i", "grpc",
           *(["--streaming"] if streaming else []), "--input-data", str(inputs), "--shape", "window:50,12",
           "-b", "1", "--measurement-mode", "count_windows", "--measurement-request-count", str(requests),
           "--max-trials", "3", "--stability-percentage", "100"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "LD_LIBRARY_PATH": str(PA_DIR)})
    if run.returncode:
        raise SystemExit(run.stdout + run.stderr)
    found = dict(re.findall(r"(p50|p90|p99) latency: (\d+) usec", run.stdout))
    rate = re.search(r"Throughput: ([\d.]+) infer/sec", run.stdout)
    return {**{f"{q}_us": float(v) for q, v in found.items()}, "per_s": float(rate.group(1)) if rate else 0.0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=2000, help="requests per measurement window")
    a = p.parse_args()
    if why := triton.unusable():
        raise SystemExit(why)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        export_random(work / "src", seed=5)
        triton.python_backend_repo(work / "src", work / "triton")
        windows = np.random.default_rng(0).lognormal(-6, 1, size=(16, 50, 12)).astype(np.float32)
        inputs = work / "input.json"
        inputs.write_text(json.dumps({"data": [{"window": {"content": w.ravel().tolist(), "shape": [50, 12]}}
                                               for w in windows]}))
        servers = [triton.tritonserver(work, work / "triton"), procs.sidecar(work, work / "src")]
        try:
            print(f"{'server':<14}{'call':<11}{'p50 µs':>8}{'p90 µs':>8}{'p99 µs':>8}{'inf/s':>8}")
            for name, (_, target) in zip(("tritonserver", "rtvol"), servers, strict=True):
                for streaming in (False, True):
                    r = perf_analyzer(target, inputs, a.requests, streaming)
                    print(f"{name:<14}{'streaming' if streaming else 'unary':<11}{r['p50_us']:>8.0f}"
                          f"{r['p90_us']:>8.0f}{r['p99_us']:>8.0f}{r['per_s']:>8.0f}")
        finally:
            procs.stop_all([proc for proc, _ in servers])


if __name__ == "__main__":
    main()
