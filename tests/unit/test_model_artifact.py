"""Compiled packages at export (services/model/backends/artifact.py) and the graph changes
that cut the CUDA-graph backend's kernels (merged heads, packed outputs).

The key checks and every fallback run on the CPU; a real AOTInductor package is built for
the CPU (slow: a C++ compile) and, on a GPU host, for the GPU the CUDA-graph backend serves."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from helpers.models import export_random
from helpers.parity import assert_half_close, output_scale, reference, windows
from prometheus_client import REGISTRY

from rtvol.repository import version_dir
from rtvol.services.model import backends
from rtvol.services.model.backends import ModelFiles, artifact
from rtvol.services.model.backends.packed import packed_model
from rtvol.services.model.backends.torch_onnx import TorchGraph
from rtvol.training.cnn import OUTPUTS

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
    """load_or_compile compiles (here: a marker), logs and counts ``reason``; returns the log."""
    before = fallbacks(reason)
    marker = object()
    with caplog.at_level(logging.WARNING, logger=artifact.__name__):
        forward, source = artifact.load_or_compile(files.version_dir, key, (50, 12),
                                                   lambda: marker)  # type: ignore[arg-type, return-value]
    assert forward is marker and source == "compiled at start"
    assert fallbacks(reason) == before + 1
    return caplog.text


def test_no_package_compiles_at_start(files: ModelFiles, caplog: pytest.LogCaptureFixture) -> None:
    key = artifact.machine_key(CPU, "fp16", files.onnx)
    assert "rtvol export --compile" in expect_fallback(files, key, "missing", caplog)


def write_key(files: ModelFiles, key: dict[str, str], folder: str | None = None) -> Path:
    found = files.version_dir / artifact.DIR / (folder or artifact.digest(key))
    found.mkdir(parents=True)
    (found / artifact.KEY_FILE).write_text(json.dumps(key))
    return found


@pytest.mark.parametrize("field", ["gpu", "torch", "onnx_sha256", "precision"])
def test_a_package_for_another_machine_or_model_is_never_loaded(
        files: ModelFiles, caplog: pytest.LogCaptureFixture, field: str) -> None:
    here = artifact.machine_key(CPU, "fp16", files.onnx) | {"gpu": "NVIDIA H200"}
    there = here | {field: "something else"}
    found = write_key(files, there)
    (found / artifact.ONE).write_bytes(b"never opened")  # loading it would fail differently
    text = expect_fallback(files, here, "mismatch", caplog)
    assert f"{field}='something else'" in text


def test_a_key_file_that_does_not_match_its_folder_is_refused(files: ModelFiles,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    here = artifact.machine_key(CPU, "fp16", files.onnx)
    write_key(files, here | {"torch": "0.0"}, folder=artifact.digest(here))
    assert "torch='0.0'" in expect_fallback(files, here, "mismatch", caplog)


def test_a_damaged_package_compiles_at_start(files: ModelFiles, caplog: pytest.LogCaptureFixture) -> None:
    key = artifact.machine_key(CPU, "fp32", files.onnx)
    found = write_key(files, key)
    (found / artifact.ONE).write_bytes(b"not a package")
    (found / artifact.MANY).write_bytes(b"not a package")
    assert str(found) in expect_fallback(files, key, "load_failed", caplog)


def test_a_loader_crash_stays_in_the_probe(files: ModelFiles, caplog: pytest.LogCaptureFixture,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A native crash while loading (seen on the H200: SIGSEGV) kills the probe child only."""
    key = artifact.machine_key(CPU, "fp32", files.onnx)
    write_key(files, key)
    monkeypatch.setattr(artifact, "_PROBE", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    assert "exited with -11" in expect_fallback(files, key, "load_failed", caplog)


@pytest.mark.slow
def test_cpu_package_round_trip(files: ModelFiles) -> None:
    """A real AOTInductor build (CPU: the same export path as the GPU's), then a load that
    compiles nothing and answers like ONNX Runtime at batch 1 and on the dynamic axis."""
    folder = artifact.compile_version(files.version_dir, "fp32", MAX_BATCH, CPU)
    assert not list(folder.parent.glob(".building-*"))
    key = artifact.machine_key(CPU, "fp32", files.onnx)
    assert json.loads((folder / artifact.KEY_FILE).read_text()) == key

    def never() -> artifact.Forward:
        raise AssertionError("compiled although a matching package exists")
    forward, source = artifact.load_or_compile(files.version_dir, key, (50, 12), never)
    assert source == "artifact"
    module = packed_model(files.onnx, CPU, "fp32")
    for n in (1, 7, MAX_BATCH):
        x = windows(n, seed=n)
        got, want = module.unpack(forward(torch.from_numpy(x)).numpy()), reference(files, x)
        for name in OUTPUTS:
            np.testing.assert_allclose(got[name], want[name], atol=1e-4, rtol=0, err_msg=f"{name} n={n}")
    shutil.rmtree(folder)


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_cuda_graph_backend_serves_the_exported_package(files: ModelFiles, precision: str) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from rtvol.services.model.backends.cuda_graph import CudaGraphBackend

    artifact.compile_version(files.version_dir, precision, MAX_BATCH, torch.device("cuda"))
    backend = CudaGraphBackend(files, precision)
    assert backend.source == "artifact"
    backend.warmup(backends.batch_buckets(MAX_BATCH))
    scale = output_scale(files)
    for n in (1, 7, MAX_BATCH):
        x = windows(n, seed=n)
        got, want = {k: v.copy() for k, v in backend.infer(x).items()}, reference(files, x)
        for name in OUTPUTS:
            assert_half_close(got[name], want[name], scale[name], f"{name} (n={n})")
