"""PyTorch CUDA graphs: one graph captured per batch bucket over static buffers.

Each graph holds the whole request: the copy from a pinned host input buffer, the model,
and the copies of every output into pinned host buffers. Per request that leaves one numpy
copy into the pinned input, one graph launch and one stream sync; nothing is allocated
after warm-up. Convolutions run in fp16/bf16, the rest in fp32 (see TorchGraph).

With ``compile`` (default where Triton imports) the graph is first compiled by
TorchInductor, which fuses the ~40 small ops into a handful of kernels: inside a CUDA graph
each kernel still costs ~2 µs on an H100/H200, so the kernel count is the latency.
"""

from __future__ import annotations

import bisect
import importlib.util
from collections.abc import Callable, Sequence

import numpy as np
import onnx
import torch

from rtvol.services.model.backends.base import BackendUnavailable, ModelFiles
from rtvol.services.model.backends.torch_onnx import TorchGraph

PRECISIONS = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": None}


def can_compile() -> bool:
    return importlib.util.find_spec("triton") is not None


class CudaGraphBackend:
    def __init__(self, files: ModelFiles, precision: str = "fp16",
                 compile: bool | None = None, conv_matmul: bool = True) -> None:
        if not torch.cuda.is_available():
            raise BackendUnavailable("torch sees no CUDA device")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {tuple(PRECISIONS)}, not {precision!r}")
        self.compiled = can_compile() if compile is None else compile
        self.name = f"torch-cudagraph-{precision}" + ("-compiled" if self.compiled else "")
        self.device = torch.device("cuda")
        model = onnx.load(str(files.onnx))
        graph = TorchGraph(model, self.device, conv_dtype=PRECISIONS[precision],
                           conv_matmul=conv_matmul)
        self.forward: Callable[[torch.Tensor], tuple[torch.Tensor, ...]] = (
            # dynamic=None: the first two batch sizes compile static (batch 1 stays specialised),
            # the third compiles once with a symbolic batch for every other bucket
            torch.compile(graph, fullgraph=True) if self.compiled else graph)
        self.output_names = files.output_names
        self.max_batch = files.max_batch_size
        dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]]
        self.static_in = torch.zeros((self.max_batch, *dims), device=self.device)
        self.host_in = torch.zeros((self.max_batch, *dims), pin_memory=True)
        self.host_in_np = self.host_in.numpy()
        self.stream = torch.cuda.Stream()
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.host_out: dict[str, torch.Tensor] = {}
        self.host_out_np: dict[str, np.ndarray] = {}
        self.buckets: list[int] = []

    def _request(self, b: int) -> None:
        """What one graph replays: input copy, model, output copies (pinned host <-> device)."""
        self.static_in[:b].copy_(self.host_in[:b], non_blocking=True)
        for name, out in zip(self.output_names, self.forward(self.static_in[:b]), strict=True):
            self.host_out[name][:b].copy_(out, non_blocking=True)

    def warmup(self, buckets: Sequence[int]) -> None:
        self.buckets = sorted(buckets)
        with torch.no_grad():
            top = self.forward(self.static_in[:self.buckets[-1]])
        self.host_out = {n: torch.zeros(o.shape, pin_memory=True)
                         for n, o in zip(self.output_names, top, strict=True)}
        self.host_out_np = {n: t.numpy() for n, t in self.host_out.items()}
        with torch.no_grad(), torch.cuda.stream(self.stream):
            for b in self.buckets:
                for _ in range(3):  # eager runs first: compile, and cuDNN picks its algorithms
                    self._request(b)
                self.stream.synchronize()
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, stream=self.stream):
                    self._request(b)
                self.graphs[b] = graph
        self.infer(np.zeros(self.host_in_np[:1].shape, np.float32))

    def infer(self, window: np.ndarray) -> dict[str, np.ndarray]:
        n = window.shape[0]
        b = self.buckets[bisect.bisect_left(self.buckets, n)]
        self.host_in_np[:n] = window
        with torch.cuda.stream(self.stream):  # replay() launches on the current stream
            self.graphs[b].replay()
        self.stream.synchronize()
        return {name: arr[:n] for name, arr in self.host_out_np.items()}
