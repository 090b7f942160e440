"""ONNX export with a parity gate: a model that ONNX Runtime does not reproduce is refused."""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnxruntime as ort
import torch

from rtvol.features.spec import N_FEATURES, STEPS
from rtvol.repository import ServingConfig, TensorSpec
from rtvol.training.cnn import INPUT, OUTPUTS, VolCNN

OPSET = 18
PARITY_TOLERANCE = 1e-4


class ExportError(RuntimeError):
    """The exported graph disagrees with the torch model."""


SERVING = ServingConfig(
    inputs=(TensorSpec(INPUT, (STEPS, N_FEATURES)),),
    outputs=(TensorSpec("rv", (1,)), TensorSpec("direction", (3,)), TensorSpec("momentum", (1,))),
)


def to_onnx(model: VolCNN) -> bytes:
    model = model.eval().cpu()
    buffer = io.BytesIO()
    sample = torch.rand(4, STEPS, N_FEATURES) * 1e-3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (sample,), buffer,  # type: ignore[arg-type]  # accepts a file object
            input_names=[INPUT], output_names=list(OUTPUTS),
            opset_version=OPSET, dynamo=False,
            dynamic_axes={INPUT: {0: "batch"}, **{o: {0: "batch"} for o in OUTPUTS}},
        )
    return buffer.getvalue()


def onnx_session(onnx_model: bytes, threads: int = 1) -> ort.InferenceSession:

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(onnx_model, opts, providers=["CPUExecutionProvider"])


def run(onnx_model: bytes, windows: np.ndarray, batch: int = 4096,
        threads: int = 2) -> dict[str, np.ndarray]:
    """Every output of the graph for ``windows``, through ONNX Runtime in batches."""
    session = onnx_session(onnx_model, threads)
    names = [o.name for o in session.get_outputs()]
    outs = [session.run(names, {INPUT: windows[i:i + batch]})
            for i in range(0, len(windows), batch)]
    return {name: np.concatenate([o[k] for o in outs]) for k, name in enumerate(names)}


def check_parity(onnx_model: bytes, model: VolCNN, windows: np.ndarray) -> float:
    """Max |onnxruntime - torch| over all outputs; raises ExportError above tolerance."""
    x = np.ascontiguousarray(windows, dtype=np.float32)
    session = onnx_session(onnx_model)
    got = session.run(list(OUTPUTS), {INPUT: x})
    with torch.no_grad():
        want = [t.numpy() for t in model.eval().cpu()(torch.from_numpy(x))]
    diff = max(float(np.max(np.abs(g - w))) for g, w in zip(got, want, strict=True))
    if not np.isfinite(diff) or diff > PARITY_TOLERANCE:
        raise ExportError(f"ONNX Runtime differs from torch by {diff:.3g} "
                          f"(> {PARITY_TOLERANCE}); refusing to write this model")
    return diff
