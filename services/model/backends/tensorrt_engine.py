"""TensorRT: an engine built offline (`rtvol export --tensorrt`), stored beside the ONNX as
model.plan and deserialised at start; never built on the request path."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rtvol.services.model.backends.base import BackendUnavailable, ModelFiles

PLAN_FILE = "model.plan"


class TensorRTBackend:
    def __init__(self, files: ModelFiles) -> None:
        try:
            import tensorrt as trt
            import torch
        except ImportError as e:
            raise BackendUnavailable(f"tensorrt is not installed ({e})") from e
        if not torch.cuda.is_available():
            raise BackendUnavailable("torch sees no CUDA device")
        plan = files.version_dir / PLAN_FILE
        if not plan.is_file():
            raise BackendUnavailable(f"{plan} missing: build it with `rtvol export --tensorrt`")
        self.torch = torch
        self.name = "tensorrt"
        self.on_gpu = True  # its own stream: a shadow version is not sliced (shadow.py)
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(plan.read_bytes())
        if self.engine is None:
            raise BackendUnavailable(f"{plan}: TensorRT could not deserialise the engine")
        self.context = self.engine.create_execution_context()
        self.input_name, self.output_names = files.input_name, files.output_names
        self.max_batch = files.max_batch_size
        self.stream = torch.cuda.Stream()
        in_dims = tuple(self.engine.get_tensor_shape(self.input_name))[1:]
        self.dev: dict[str, torch.Tensor] = {}
        self.host: dict[str, torch.Tensor] = {}
        for name in (self.input_name, *self.output_names):
            dims = in_dims if name == self.input_name else tuple(self.engine.get_tensor_shape(name))[1:]
            self.dev[name] = torch.zeros((self.max_batch, *dims), device="cuda")
            self.host[name] = torch.zeros((self.max_batch, *dims), pin_memory=True)
            self.context.set_tensor_address(name, self.dev[name].data_ptr())
        self.host_np = {n: t.numpy() for n, t in self.host.items()}

    def infer(self, window: np.ndarray) -> dict[str, np.ndarray]:
        n = window.shape[0]
        self.host_np[self.input_name][:n] = window
        self.context.set_input_shape(self.input_name, window.shape)
        with self.torch.cuda.stream(self.stream):
            self.dev[self.input_name][:n].copy_(self.host[self.input_name][:n], non_blocking=True)
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("TensorRT execution failed")
            for name in self.output_names:
                self.host[name][:n].copy_(self.dev[name][:n], non_blocking=True)
        self.stream.synchronize()
        return {name: self.host_np[name][:n] for name in self.output_names}

    def warmup(self, buckets: Sequence[int]) -> None:
        shape = self.host_np[self.input_name].shape[1:]
        for n in buckets:
            self.infer(np.zeros((n, *shape), dtype=np.float32))
