"""The compile cache stored at export (services/model/backends/artifact.py) and the graph
changes that cut the CUDA-graph backend's kernels (merged heads, packed outputs).

The key checks and every fallback run on the CPU; a real cache is built and reused by a
fresh process on the CPU (slow: C++ compiles) and, on a GPU host, for the CUDA-graph backend."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import numpy as np
import onnx
import pytest
import torch
from helpers.models import export_random
from helpers.parity import assert_half_close, output_scale, reference, windows
from prometheus_client import REGISTRY

from rtvol.repository import version_dir
from rtvol.services.model.backends import ModelFiles, artifact
from rtvol.services.model.backends.packed import packed_model
from rtvol.services.model.backends.torch_onnx import TorchGraph
from rtvol.training.cnn import OUTPUTS
from rtvol.training.tensorrt_export import max_batch_size

MAX_BATCH = 16
CPU = torch.device("cpu")


@pytest.fixture
def files(tmp_path: Path) -> ModelFiles:
    export_random(tmp_path, seed=3, name="m")
    return ModelFiles(version_dir(tmp_path, "m"), "window", OUTPUTS, MAX_BATCH)


def test_sibling_heads_run_as_one_gemm_with_the_same_outputs(files: ModelFiles) -> None:
    model = onnx.load(str(files.onnx))
    plain, merged = TorchGraph(model), TorchGraph(model, merge_gemms=True)
    heads = [outputs[0] for _, _, outputs in merged.steps if outputs[0].endswith("::heads")]
    assert len(heads) == 1  # rv, direction and momentum heads share one GEMM
    def gemms(graph: TorchGraph) -> int:
        return sum(fn.__qualname__.startswith("_gemm.") for fn, _, _ in graph.steps)
    assert (gemms(plain), gemms(merged)) == (5, 3)  # two dense layers, then three heads or one
    x = windows(9)
    want = reference(files, x)
    for graph in (plain, merged):
        got = dict(zip(graph.output_names, graph(torch.from_numpy(x)), strict=True))
        for name in OUTPUTS:
            np.testing.assert_allclose(got[name].numpy(), want[name], atol=1e-4, rtol=0)


def test_packed_outputs_unpack_to_each_output(files: ModelFiles) -> None:
    module = packed_model(files.onnx, CPU, "fp32")
    x = windows(5)
    with torch.no_grad():
        packed = module(torch.from_numpy(x)).numpy()
    assert packed.shape == (5, sum(module.widths))
    got, want = module.unpack(packed), reference(files, x)
    for name in OUTPUTS:
        assert got[name].shape == want[name].shape
        np.testing.assert_allclose(got[name], want[name], atol=1e-4, rtol=0)


def fallbacks(reason: str) -> float:
    return REGISTRY.get_sample_value("rtvol_model_compile_fallbacks_total",
                                     {"model": "m", "reason": reason}) or 0.0


def expect_fallback(files: ModelFiles, key: dict[str, str], reason: str, caplog: pytest.LogCaptureFixture
                    ) -> str:
    """use_stored says the model compiles at start, logs and counts ``reason``; returns the log."""
    before = fallbacks(reason)
    with caplog.at_level(logging.WARNING, logger=artifact.__name__):
        assert artifact.use_stored(files.version_dir, key) == artifact.COMPILED
    assert fallbacks(reason) == before + 1
    return caplog.text


def test_no_stored_cache_compiles_at_start(files: ModelFiles, caplog: pytest.LogCaptureFixture) -> None:
    key = artifact.machine_key(CPU, "fp16", files.onnx)
    assert "rtvol export --compile" in expect_fallback(files, key, "missing", caplog)


def write_key(files: ModelFiles, key: dict[str, str], folder: str | None = None) -> Path:
    found = files.version_dir / artifact.DIR / (folder or artifact.digest(key))
    found.mkdir(parents=True)
    (found / artifact.KEY_FILE).write_text(json.dumps(key))
    return found


@pytest.mark.parametrize("field", ["gpu", "torch", "onnx_sha256", "precision"])
def test_a_cache_for_another_machine_or_model_is_never_loaded(
        files: ModelFiles, caplog: pytest.LogCaptureFixture, field: str) -> None:
    here = artifact.machine_key(CPU, "fp16", files.onnx) | {"gpu": "NVIDIA H200"}
    there = here | {field: "something else"}
    found = write_key(files, there)
    (found / artifact.CACHE_FILE).write_bytes(b"never opened")  # loading it would fail differently
    text = expect_fallback(files, here, "mismatch", caplog)
    assert f"{field}='something else'" in text


def test_a_key_file_that_does_not_match_its_folder_is_refused(files: ModelFiles,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    here = artifact.machine_key(CPU, "fp16", files.onnx)
    write_key(files, here | {"torch": "0.0"}, folder=artifact.digest(here))
    assert "torch='0.0'" in expect_fallback(files, here, "mismatch", caplog)


def test_a_damaged_cache_compiles_at_start(files: ModelFiles, caplog: pytest.LogCaptureFixture) -> None:
    key = artifact.machine_key(CPU, "fp32", files.onnx)
    found = write_key(files, key)
    (found / artifact.CACHE_FILE).write_bytes(b"not a cache")
    assert str(found) in expect_fallback(files, key, "load_failed", caplog)


# A fresh process with empty local caches: what a new pod has. It loads the stored cache,
# compiles, and says how many graphs TorchInductor had to compile (cache misses) and its outputs;
# with "save" it then stores its compile cache, as `rtvol export --compile` does (in a process of
# its own: one that compiled the same graphs earlier would store an incomplete cache).
_FRESH = """
import json, sys, pathlib, torch
from rtvol.services.model.backends import artifact
from rtvol.services.model.backends.packed import packed_model
vdir, device, x = pathlib.Path(sys.argv[1]), torch.device(sys.argv[2]), torch.load(sys.argv[3])
key = artifact.machine_key(device, "fp32", vdir / "model.onnx")
module = packed_model(vdir / "model.onnx", device, "fp32")
source = artifact.use_stored(vdir, key)
forward = torch.compile(module, fullgraph=True)
with torch.no_grad():
    out = [forward(x[:n].to(device)).cpu().tolist() for n in (1, 2, len(x))]
misses = artifact.cache_misses()
saved = str(artifact.save(vdir, key)) if sys.argv[4:] == ["save"] else ""
print(json.dumps({"source": source, "misses": misses, "out": out, "saved": saved}))
"""


def run_fresh(script: str, args: list[str], tmp_path: Path) -> dict[str, Any]:
    """Run ``script`` in a new python with empty local compile caches; its last line, parsed."""
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"),
           "TRITON_CACHE_DIR": str(tmp_path / "triton")}
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return cast(dict[str, Any], json.loads(done.stdout.strip().splitlines()[-1]))


def fresh_process(files: ModelFiles, device: str, x: np.ndarray, tmp_path: Path,
                  *save: str) -> dict[str, Any]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    torch.save(torch.from_numpy(x), tmp_path / "x.pt")
    return run_fresh(_FRESH, [str(files.version_dir), device, str(tmp_path / "x.pt"), *save], tmp_path)


@pytest.mark.slow
def test_a_stored_cache_compiles_nothing_in_a_fresh_process(files: ModelFiles, tmp_path: Path) -> None:
    """The CPU stands in for the GPU (same torch.compile path, C++ kernels instead of Triton):
    a fresh process compiles with empty caches and stores its cache, then another fresh process
    with empty local caches answers like ONNX Runtime having compiled no graph."""
    x = windows(5, seed=5)
    key = artifact.machine_key(CPU, "fp32", files.onnx)
    cold = fresh_process(files, "cpu", x, tmp_path / "cold", "save")  # no stored cache yet: compiles
    assert cold["source"] == artifact.COMPILED and cold["misses"] > 0
    folder = Path(cold["saved"])
    assert not list(folder.parent.glob(".building-*"))
    assert json.loads((folder / artifact.KEY_FILE).read_text()) == key
    warm = fresh_process(files, "cpu", x, tmp_path / "warm")
    assert warm["source"] == artifact.STORED and warm["misses"] == 0
    module = packed_model(files.onnx, CPU, "fp32")
    want = reference(files, x)
    got = module.unpack(np.asarray(warm["out"][-1], np.float32))
    for name in OUTPUTS:
        np.testing.assert_allclose(got[name], want[name], atol=1e-4, rtol=0, err_msg=name)


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_cuda_graph_backend_serves_the_exported_cache(tmp_path: Path, precision: str) -> None:
    """`rtvol export --compile`, then a fresh process with empty local caches: the backend
    reports the stored cache with no graph compiled and answers within the half precision
    criterion."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    repo = tmp_path / "repo"
    export_random(repo, seed=3, name="m")
    export = ["export", "--repo", str(repo), "--model", "m", "--compile", "--precision", precision]
    done = subprocess.run([sys.executable, "-m", "rtvol.cli", *export], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    max_batch = max_batch_size(repo, "m")
    files = ModelFiles(version_dir(repo, "m"), "window", OUTPUTS, max_batch)
    x = windows(MAX_BATCH, seed=7)
    np.save(tmp_path / "x.npy", x)
    script = f"""
import json, sys, pathlib, numpy as np
from rtvol.services.model.backends import ModelFiles, batch_buckets
from rtvol.services.model.backends.cuda_graph import CudaGraphBackend
files = ModelFiles(pathlib.Path(sys.argv[1]), "window", {OUTPUTS!r}, {max_batch})
b = CudaGraphBackend(files, {precision!r}, fused=False)  # the stored cache is the generic path's
b.warmup(batch_buckets({max_batch}))
x = np.load(sys.argv[2])
print(json.dumps({{"source": b.source, **{{k: v.tolist() for k, v in b.infer(x).items()}}}}))
"""
    got = run_fresh(script, [str(files.version_dir), str(tmp_path / "x.npy")], tmp_path)
    assert got["source"] == artifact.STORED  # not "..., N graph(s) compiled"
    want, scale = reference(files, x), output_scale(files)
    for name in OUTPUTS:
        assert_half_close(np.asarray(got[name], np.float32), want[name], scale[name], name)
