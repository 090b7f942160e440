"""The staged backend: ONNX Runtime on the CPU answers from the start, the backend built beside
it takes over once warm, and a failed build leaves ONNX Runtime serving."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from helpers.models import random_model_files
from helpers.parity import assert_half_close, output_scale, reference, windows
from prometheus_client import REGISTRY

from rtvol.services.model import backends
from rtvol.services.model.backends import BackendUnavailable, ModelFiles, batch_buckets
from rtvol.services.model.backends.onnxrt import OnnxRuntimeBackend
from rtvol.services.model.backends.staged import StagedBackend
from rtvol.training.cnn import OUTPUTS

MAX_BATCH = 16


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> ModelFiles:
    return random_model_files(tmp_path_factory.mktemp("repo"), 3, "staged", MAX_BATCH)


def assert_reference(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    for name in OUTPUTS:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-7)


def test_onnxruntime_answers_until_the_built_backend_takes_over(files: ModelFiles) -> None:
    gate, second = threading.Event(), OnnxRuntimeBackend(files, "cpu")
    second.warmup = lambda buckets: gate.wait(10)  # type: ignore[method-assign]  # warm once let go

    staged = StagedBackend(files, "staged-test", lambda: second)
    staged.warmup(batch_buckets(MAX_BATCH))
    x = windows(5, seed=11)
    assert_reference(staged.infer(x), reference(files, x))
    assert staged.current is staged.cpu and not staged.done.is_set()  # ready before the build is warm
    gate.set()
    assert staged.done.wait(10)
    assert staged.current is second
    assert_reference(staged.infer(x), reference(files, x))


def test_a_failed_build_leaves_onnxruntime_serving(files: ModelFiles) -> None:
    labels = {"model": "staged", "reason": "staged_gpu_failed"}
    before = REGISTRY.get_sample_value("rtvol_model_compile_fallbacks_total", labels) or 0.0

    def build() -> backends.Backend:
        raise RuntimeError("no CUDA graphs today")

    staged = StagedBackend(files, "staged-test", build)
    staged.warmup(batch_buckets(MAX_BATCH))
    assert staged.done.wait(10)
    assert staged.current is staged.cpu
    x = windows(MAX_BATCH, seed=12)
    assert_reference(staged.infer(x), reference(files, x))
    assert REGISTRY.get_sample_value("rtvol_model_compile_fallbacks_total", labels) == before + 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU machine stages the CUDA graphs")
def test_without_a_gpu_auto_serves_onnxruntime(files: ModelFiles) -> None:
    with pytest.raises(BackendUnavailable):
        backends.create("cudagraph-staged", files)
    assert backends.create("auto", files).name == "onnxruntime-cpu"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_staged_cuda_graphs_answer_correctly_before_and_after_taking_over(files: ModelFiles) -> None:
    from rtvol.services.model.backends.cuda_graph import CudaGraphBackend

    staged = backends.create("cudagraph-staged", files, precision="fp16")
    assert isinstance(staged, StagedBackend)
    staged.warmup(batch_buckets(MAX_BATCH))
    x = windows(MAX_BATCH, seed=13)
    want = reference(files, x)
    if not staged.done.is_set():
        assert_reference(staged.infer(x), want)
    assert staged.done.wait(600)
    assert isinstance(staged.current, CudaGraphBackend)
    got, scale = staged.infer(x), output_scale(files)
    for name in OUTPUTS:
        assert_half_close(got[name], want[name], scale[name], name)
