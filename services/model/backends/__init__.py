"""Backends behind one interface (base.Backend), chosen by configuration and hardware.

``auto`` prefers TensorRT (engine present and tensorrt importable), then PyTorch CUDA
graphs (a CUDA device; rtvol_cnn as one hand-written Triton kernel, any other graph fused by
TorchInductor, where Triton imports) staged behind ONNX
Runtime on the CPU, which answers from a second after start until the graphs are warm
(staged.py), then ONNX Runtime (CUDA EP where the build has it, else CPU). ``cudagraph``
alone is ready only once its graphs are warm (what the benchmarks time).
"""

from __future__ import annotations

import logging

from rtvol.services.model.backends.base import Backend, BackendUnavailable, ModelFiles, batch_buckets

log = logging.getLogger(__name__)

NAMES = ("auto", "onnxruntime", "onnxruntime-cpu", "cudagraph", "cudagraph-compiled", "cudagraph-eager",
         "cudagraph-staged", "tensorrt")

__all__ = ["NAMES", "Backend", "BackendUnavailable", "ModelFiles", "batch_buckets", "create"]


def create(name: str, files: ModelFiles, precision: str = "fp16", threads: int = 1) -> Backend:
    """The named backend; BackendUnavailable when this machine cannot run it."""
    if name == "auto":
        for candidate in ("tensorrt", "cudagraph-staged"):
            try:
                return create(candidate, files, precision, threads)
            except BackendUnavailable as e:
                log.info("backend %s unavailable: %s", candidate, e)
        return create("onnxruntime", files, precision, threads)
    if name in ("onnxruntime", "onnxruntime-cpu"):
        from rtvol.services.model.backends.onnxrt import OnnxRuntimeBackend

        return OnnxRuntimeBackend(files, "cpu" if name.endswith("cpu") else "auto", threads)
    if name in ("cudagraph", "cudagraph-compiled", "cudagraph-eager"):
        try:
            from rtvol.services.model.backends.cuda_graph import CudaGraphBackend
        except ImportError as e:
            raise BackendUnavailable(f"torch/onnx missing ({e})") from e
        # cudagraph: rtvol_cnn as one fused kernel where it applies; the other two never fuse
        # (compiled: TorchInductor's kernels; eager: torch's)
        return CudaGraphBackend(files, precision, compile=False if name.endswith("eager") else None,
                                fused=None if name == "cudagraph" else False)
    if name == "cudagraph-staged":
        from rtvol.services.model.backends.staged import staged_cuda_graphs

        return staged_cuda_graphs(files, precision, threads)
    if name == "tensorrt":
        from rtvol.services.model.backends.tensorrt_engine import TensorRTBackend

        return TensorRTBackend(files)
    raise ValueError(f"unknown backend {name!r}; choose one of {NAMES}")
