"""rtvol_cnn as one kernel (services/model/backends/fused_cnn.py): the graph is recognised, what
is read from it computes ONNX Runtime's numbers (CPU), anything else is left to the generic
path, and the Triton kernel itself matches on a GPU (skips with a reason elsewhere)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from helpers.models import random_model_files
from helpers.parity import assert_half_close, output_scale, reference, windows
from onnx import TensorProto, helper

from rtvol.repository import write_version
from rtvol.services.model.backends import ModelFiles
from rtvol.services.model.backends import fused_cnn as fc
from rtvol.training.cnn import OUTPUTS, VolCNN
from rtvol.training.export import SERVING, to_onnx

GPU_SKIP = ("no CUDA device" if not torch.cuda.is_available()
            else "Triton is not installed" if importlib.util.find_spec("triton") is None else "")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> ModelFiles:
    return random_model_files(tmp_path_factory.mktemp("repo"), 3, "m", 64)


def packed(want: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([want[k].reshape(len(want[k]), -1) for k in OUTPUTS], axis=1)


def assert_packed_half_close(got: np.ndarray, want: dict[str, np.ndarray], scale: dict[str, float],
                             what: str) -> None:
    start = 0
    for name in OUTPUTS:
        expected = want[name].reshape(len(got), -1)
        width = expected.shape[1]
        assert_half_close(got[:, start:start + width], expected, scale[name], f"{name} ({what})")
        start += width


def test_reads_rtvol_cnn_and_computes_onnxruntimes_numbers(files: ModelFiles) -> None:
    spec = fc.extract(onnx.load(str(files.onnx)))
    assert spec is not None
    assert spec.widths == (1, 3, 1) and [d for _, _, d in spec.convs] == [1, 2, 4]
    for n in (1, 9):
        x = windows(n, seed=n)
        got = fc.reference(spec, torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(got, packed(reference(files, x)), atol=1e-5, rtol=1e-5)


def test_half_precision_convolutions_stay_within_the_parity_criterion(files: ModelFiles) -> None:
    spec = fc.extract(onnx.load(str(files.onnx)))
    assert spec is not None
    x = windows(64, seed=5)
    got = fc.reference(spec, torch.from_numpy(x), torch.float16).numpy()
    assert_packed_half_close(got, reference(files, x), output_scale(files), "fp16, CPU")


def test_the_kernels_weights_are_padded_to_powers_of_two(files: ModelFiles) -> None:
    """Zero rows and columns only: padded channels stay 0 through every ReLU."""
    spec = fc.extract(onnx.load(str(files.onnx)))
    assert spec is not None
    fused = fc.FusedCnn(spec, torch.device("cpu"), torch.float16)
    assert fused.channels == [16, 32, 64, 32] and fused.hidden == [64, 32] and fused.head_cols == 16
    w1 = fused.convs[0]
    assert w1.shape == (3, 16, 32) and w1.dtype == torch.float16 and not w1[:, 12:].any()
    assert torch.equal(w1[2, :12].float(), torch.from_numpy(spec.convs[0][0][:, :, 2].T).half().float())
    assert fused.dense[0].shape == (3 * 32 + len(spec.tails) + 1, 64)
    assert float(fused.norm[2][12:].min()) == 1.0  # std of padded columns: no division by 0


def test_other_graphs_are_left_to_the_generic_path(tmp_path: Path) -> None:
    torch.manual_seed(0)
    two_convs = VolCNN(channels=(32, 64), dilations=(1, 2))
    write_version(tmp_path, "two", to_onnx(two_convs), {}, SERVING)
    assert fc.extract(onnx.load(str(next(tmp_path.rglob("model.onnx"))))) is None
    x = helper.make_tensor_value_info("window", TensorProto.FLOAT, [None, 50, 12])
    y = helper.make_tensor_value_info("rv", TensorProto.FLOAT, [None, 50, 12])
    relu = helper.make_node("Relu", ["window"], ["rv"])
    relu_only = helper.make_model(helper.make_graph([relu], "g", [x], [y]))
    assert fc.extract(relu_only) is None


@pytest.mark.gpu
@pytest.mark.skipif(bool(GPU_SKIP), reason=GPU_SKIP or "ok")
def test_a_kernel_that_disagrees_with_the_graph_never_serves(files: ModelFiles,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from prometheus_client import REGISTRY

    from rtvol.services.model.backends import cuda_graph

    labels = {"model": files.version_dir.parent.name, "reason": "fused_mismatch"}
    before = REGISTRY.get_sample_value("rtvol_model_compile_fallbacks_total", labels) or 0.0
    monkeypatch.setattr(cuda_graph, "FUSED_TOLERANCE", -1.0)  # no kernel can be this close
    backend = cuda_graph.CudaGraphBackend(files, "fp16", compile=False)
    assert backend.fused is None and backend.name == "torch-cudagraph-fp16"
    assert REGISTRY.get_sample_value("rtvol_model_compile_fallbacks_total", labels) == before + 1


@pytest.mark.gpu
@pytest.mark.skipif(bool(GPU_SKIP), reason=GPU_SKIP or "ok")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_the_kernel_matches_onnxruntime(files: ModelFiles, dtype: torch.dtype) -> None:
    spec = fc.extract(onnx.load(str(files.onnx)))
    assert spec is not None
    kernel = fc.FusedCnn(spec, torch.device("cuda"), dtype)
    scale = output_scale(files)
    for n in (1, 7, 64, 1000):
        x = windows(n, seed=n)
        got = kernel(torch.from_numpy(x).cuda(), torch.empty((n, 5), device="cuda")).cpu().numpy()
        assert_packed_half_close(got, reference(files, x), scale, f"{dtype}, n={n}")


@pytest.mark.gpu
@pytest.mark.skipif(bool(GPU_SKIP), reason=GPU_SKIP or "ok")
def test_a_batch_already_in_the_pinned_input_gets_the_same_answers(files: ModelFiles) -> None:
    """What the batcher does with input_buffer: the kernel reads the rows where they are."""
    from rtvol.services.model.backends import batch_buckets
    from rtvol.services.model.backends.cuda_graph import CudaGraphBackend

    backend = CudaGraphBackend(files, "fp16")
    assert backend.name == "torch-cudagraph-fp16-fused"
    backend.warmup(batch_buckets(64))
    x = windows(7, seed=2)
    want = {k: v.copy() for k, v in backend.infer(x).items()}
    backend.input_buffer[:] = 0
    backend.input_buffer[:7] = x
    got = backend.infer(backend.input_buffer[:7])
    for name in OUTPUTS:
        np.testing.assert_array_equal(got[name], want[name])
