"""NVIDIA's perf_analyzer (the C++ load client of Triton) against the real sidecar, unchanged.

PyPI's perf-analyzer wheel needs a newer glibc than Debian 12; the binary inside
tritonclient 2.51.0's wheel runs with Debian's libb64-0d and libcudart.so.12 from PyPI's
nvidia-cuda-runtime-cu12. `make test` puts both under build/perf_analyzer (`make perf-analyzer`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers.models import MODEL, export_random

from rtvol.loadtest.bench.launch import Child, Sidecar
from rtvol.localproc import grpc_ready, wait_until

pytestmark = pytest.mark.integration
PA_DIR = Path(os.environ.get("RTVOL_PERF_ANALYZER_DIR", "build/perf_analyzer")).resolve()
BINARY = PA_DIR / "perf_analyzer"


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not BINARY.exists():
        pytest.skip(f"{BINARY} missing: run `make perf-analyzer`")
    repo = tmp_path_factory.mktemp("models")
    export_random(repo, seed=5)
    proc = Sidecar(repo)
    try:
        assert wait_until(grpc_ready(proc.url), 60), "sidecar not ready in 60 s"
        yield proc.url
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def input_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Feature-window-like inputs in perf_analyzer's --input-data JSON."""
    windows = np.random.default_rng(0).lognormal(-6, 1, size=(16, 50, 12)).astype(np.float32)
    path = tmp_path_factory.mktemp("pa") / "input.json"
    path.write_text(json.dumps({"data": [{"window": {"content": w.ravel().tolist(), "shape": [50, 12]}}
                                         for w in windows]}))
    return path


@pytest.mark.parametrize("mode", [[], ["--streaming"]], ids=["unary", "streaming"])
def test_perf_analyzer_runs_against_the_sidecar(sidecar: str, input_data: Path, mode: list[str]) -> None:
    out = _perf_analyzer(sidecar, input_data, mode)
    assert "error" not in out.lower(), out[-3000:]


def _perf_analyzer(url: str, input_data: Path, mode: list[str]) -> str:
    """perf_analyzer's output for a short c1 run against ``url``; asserts it measured. A fixed
    number of requests, no stability search: these tests check that perf_analyzer gets its
    answers, and a busy machine's windows can differ by more than any stability bound."""
    cmd = [str(BINARY), "-m", MODEL, "-u", url, "-i", "grpc", *mode, "--input-data", str(input_data),
           "--shape", "window:50,12", "-b", "1", "--request-count", "400"]
    env = {**os.environ, "LD_LIBRARY_PATH": str(PA_DIR)}
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-3000:]
    throughput = float(re.search(r"Throughput: ([\d.]+) infer/sec", out).group(1))  # type: ignore[union-attr]
    p50 = int(re.search(r"p50 latency: (\d+) usec", out).group(1))  # type: ignore[union-attr]
    assert throughput > 0 and p50 > 0, out[-3000:]
    return out


@pytest.mark.parametrize("mode", [[], ["--streaming"]], ids=["unary", "streaming"])
@pytest.mark.parametrize("shape", ["aio-pb", "sync-raw"])
def test_perf_analyzer_runs_against_the_kserve_echo(tmp_path: Path, input_data: Path, shape: str,
                                                    mode: list[str]) -> None:
    """The transport floors of `rtvol bench gpu --steps transport` (echo_kserve.py) answer
    perf_analyzer in both modes (a stream's answers must carry their requests' ids)."""
    if not BINARY.exists():
        pytest.skip(f"{BINARY} missing: run `make perf-analyzer`")
    export_random(tmp_path, seed=5)
    echo = Child([sys.executable, "-m", "rtvol.loadtest.bench.echo_kserve", "--repo", str(tmp_path),
                  "--shape", shape], 30)
    try:
        out = _perf_analyzer(echo.url, input_data, mode)
    finally:
        echo.stop()
    assert "error" not in out.lower(), out[-3000:]
