"""PyTorch CUDA graphs: one graph captured per batch bucket over static buffers.

Per request: copy the window into a pinned host buffer, one H2D copy, one graph replay,
one D2H copy per output, one stream sync. Nothing is allocated after warm-up; matmuls and
convolutions run in fp16/bf16 under autocast while logs, exps and sums stay in fp32.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np
import onnx
import torch

from services.model.backends.base import BackendUnavailable, ModelFiles
from services.model.backends.torch_onnx import TorchGraph

PRECISIONS = ("fp16", "bf16", "fp32")


class CudaGraphBackend:
    def __init__(self, files: ModelFiles, precision: str = "fp16") -> None:
        if not torch.cuda.is_available():
            raise BackendUnavailable("torch sees no CUDA device")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
        self.name = f"torch-cudagraph-{precision}"
        self.dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[precision]
        self.device = torch.device("cuda")
        model = onnx.load(str(files.onnx))
        self.graph_fn = TorchGraph(model, self.device)
        self.output_names = files.output_names
        self.max_batch = files.max_batch_size
        dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]]
        self.static_in = torch.zeros((self.max_batch, *dims), device=self.device)
        self.host_in = torch.zeros((self.max_batch, *dims), pin_memory=True)
        self.host_in_np = self.host_in.numpy()
        self.stream = torch.cuda.Stream()
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.static_out: dict[int, tuple[torch.Tensor, ...]] = {}
        self.host_out: dict[str, torch.Tensor] = {}
        self.buckets: list[int] = []

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with torch.autocast("cuda", dtype=self.dtype, enabled=self.dtype != torch.float32,
                            cache_enabled=False):
            outs = self.graph_fn(x)
        return tuple(o.float() for o in outs)

    def warmup(self, buckets: Sequence[int]) -> None:
        self.buckets = sorted(buckets)
        with torch.cuda.stream(self.stream):
            for b in self.buckets:
                for _ in range(3):  # eager runs first: cuDNN picks its algorithms outside capture
                    self._forward(self.static_in[:b])
                self.stream.synchronize()
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, stream=self.stream):
                    self.static_out[b] = self._forward(self.static_in[:b])
                self.graphs[b] = graph
        top = self.static_out[self.buckets[-1]]
        self.host_out = {n: torch.zeros(o.shape, pin_memory=True)
                         for n, o in zip(self.output_names, top, strict=True)}
        self.host_out_np = {n: t.numpy() for n, t in self.host_out.items()}
        self.infer(np.zeros(self.host_in_np[:1].shape, np.float32))

    def infer(self, window: np.ndarray) -> dict[str, np.ndarray]:
        n = window.shape[0]
        b = self.buckets[bisect.bisect_left(self.buckets, n)]
        self.host_in_np[:n] = window
        with torch.cuda.stream(self.stream):
            self.static_in[:n].copy_(self.host_in[:n], non_blocking=True)
            self.graphs[b].replay()
            for name, out in zip(self.output_names, self.static_out[b], strict=True):
                self.host_out[name][:n].copy_(out[:n], non_blocking=True)
        self.stream.synchronize()
        return {name: arr[:n] for name, arr in self.host_out_np.items()}
