"""ONNX Runtime: CPU always; the CUDA execution provider where the installed build has it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnxruntime as ort

from rtvol.services.model.backends.base import ModelFiles


class OnnxRuntimeBackend:
    def __init__(self, files: ModelFiles, device: str = "auto", threads: int = 1) -> None:
        cuda = "CUDAExecutionProvider" in ort.get_available_providers() and device != "cpu"
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(files.onnx), opts, providers=providers)
        self.name = "onnxruntime-cuda" if cuda else "onnxruntime-cpu"
        self.input_name = files.input_name
        self.output_names = list(files.output_names)

    def infer(self, window: np.ndarray) -> dict[str, np.ndarray]:
        outs = self.session.run(self.output_names, {self.input_name: window})
        return dict(zip(self.output_names, outs, strict=True))

    def warmup(self, buckets: Sequence[int]) -> None:
        shape = self.session.get_inputs()[0].shape[1:]
        for n in buckets:
            self.infer(np.zeros((n, *shape), dtype=np.float32))
