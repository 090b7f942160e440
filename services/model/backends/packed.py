"""A model's outputs side by side in one [batch, sum of widths] float32 tensor, so that a
request needs one device-to-host copy instead of one per output; a compiler fuses the
concatenation into the kernels that produce the outputs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import torch

from rtvol.services.model.backends.torch_onnx import TorchGraph

PRECISIONS = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": None}


class Packed(torch.nn.Module):
    def __init__(self, graph: TorchGraph, input_dims: tuple[int, ...]) -> None:
        super().__init__()
        self.graph = graph
        self.input_dims = input_dims
        with torch.no_grad():
            outs = graph(torch.zeros((1, *input_dims), device=graph.device))
        self.names = tuple(graph.output_names)
        self.dims = tuple(tuple(o.shape[1:]) for o in outs)
        self.widths = tuple(math.prod(d) for d in self.dims)

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        # outputs that are not float32 (none today) come back through float32 exactly up to 2**24
        return torch.cat([o.reshape(o.shape[0], -1).float() for o in self.graph(window)], dim=1)

    def unpack(self, packed: np.ndarray) -> dict[str, np.ndarray]:
        """Each output as a view of ``packed`` ([n, sum of widths]) with its own dims."""
        views, start = {}, 0
        for name, dims, width in zip(self.names, self.dims, self.widths, strict=True):
            views[name] = packed[:, start:start + width].reshape(packed.shape[0], *dims)
            start += width
        return views


def packed_model(onnx_path: Path, device: torch.device, precision: str,
                 conv_matmul: bool = True) -> Packed:
    """The module the backend runs and `rtvol export --compile` compiles: the same one."""
    model = onnx.load(str(onnx_path))
    graph = TorchGraph(model, device, conv_dtype=PRECISIONS[precision], conv_matmul=conv_matmul,
                       merge_gemms=True)
    dims = tuple(d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:])
    return Packed(graph, dims)
