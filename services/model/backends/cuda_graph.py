"""PyTorch CUDA graphs: one graph captured per batch bucket over static buffers.

Each graph holds the whole request: the copy from a pinned host input buffer, the model,
and one copy of all outputs (packed side by side, see packed.py) into a pinned host
buffer. Per request that leaves one copy into the pinned input, one graph launch and one
stream sync; nothing is allocated after warm-up. Convolutions run in fp16/bf16, the rest
in fp32 (see TorchGraph); sibling dense heads run as one GEMM.

With ``compile`` (default where Triton imports) the model runs TorchInductor's fused
kernels: inside a CUDA graph each kernel still costs ~2 µs on an H100/H200, so the kernel
count is the latency. torch.compile finds them in the compile cache `rtvol export --compile`
stored for this machine (artifact.py), else compiles them at start (tens of seconds).
"""

from __future__ import annotations

import bisect
import importlib.util
import logging
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnx
import torch

from rtvol.repository import MODEL_FILE
from rtvol.services.model.backends import artifact
from rtvol.services.model.backends.base import BackendUnavailable, ModelFiles, batch_buckets
from rtvol.services.model.backends.packed import PRECISIONS, packed_model

# from this many rows (600 KB) copy into the pinned input with torch's intra-op threads, not
# numpy's one: expected ~4x faster at 1024 rows (2.4 MB), not yet measured (BENCHMARKS.md)
THREADED_COPY_ROWS = 256

log = logging.getLogger(__name__)


def can_compile() -> bool:
    return importlib.util.find_spec("triton") is not None


class CudaGraphBackend:
    def __init__(self, files: ModelFiles, precision: str = "fp16",
                 compile: bool | None = None, conv_matmul: bool = True, use_stored: bool = True) -> None:
        if not torch.cuda.is_available():
            raise BackendUnavailable("torch sees no CUDA device")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {tuple(PRECISIONS)}, not {precision!r}")
        self.compiled = can_compile() if compile is None else compile
        self.name = f"torch-cudagraph-{precision}" + ("-compiled" if self.compiled else "")
        self.device = torch.device("cuda")
        self.model = packed_model(files.onnx, self.device, precision, conv_matmul)
        self.forward: Callable[[torch.Tensor], torch.Tensor] = self.model
        self.source = "eager"
        if self.compiled:
            self.key = artifact.machine_key(self.device, precision, files.onnx)
            self.source = (artifact.use_stored(files.version_dir, self.key) if use_stored
                           else artifact.COMPILED)
            # dynamic=None: the first two batch sizes compile static (batch 1 stays specialised),
            # the third compiles once with a symbolic batch for every other bucket
            self.forward = torch.compile(self.model, fullgraph=True)
        self.max_batch = files.max_batch_size
        in_dims = self.model.input_dims
        self.static_in = torch.zeros((self.max_batch, *in_dims), device=self.device)
        self.host_in = torch.zeros((self.max_batch, *in_dims), pin_memory=True)
        self.host_in_np = self.host_in.numpy()
        self.host_out = torch.zeros((self.max_batch, sum(self.model.widths)), pin_memory=True)
        self.outputs = self.model.unpack(self.host_out.numpy())
        self.stream = torch.cuda.Stream()
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.buckets: list[int] = []

    def _request(self, b: int) -> None:
        """What one graph replays: input copy, model, output copy (pinned host <-> device)."""
        self.static_in[:b].copy_(self.host_in[:b], non_blocking=True)
        self.host_out[:b].copy_(self.forward(self.static_in[:b]), non_blocking=True)

    def warmup(self, buckets: Sequence[int]) -> None:
        started = time.perf_counter()
        self.buckets = sorted(buckets)
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
        if self.source == artifact.STORED and (misses := artifact.cache_misses()):
            self.source = f"{artifact.STORED}, {misses} graph(s) compiled"  # said by the bench
        if self.compiled:
            # TorchInductor's compile-worker processes outlive the compile: at SIGTERM the
            # interpreter waited on them until the drain guard ended it (exit 3). A later
            # compile (a new model version) starts a pool again.
            from torch._inductor.async_compile import shutdown_compile_workers

            shutdown_compile_workers()
        log.info("%s kernels: %s (compile and %d graph captures: %.1f s)", self.name, self.source,
                 len(self.graphs), time.perf_counter() - started)

    def infer(self, window: np.ndarray) -> dict[str, np.ndarray]:
        n = window.shape[0]
        b = self.buckets[bisect.bisect_left(self.buckets, n)]
        if n >= THREADED_COPY_ROWS:
            self.host_in[:n].copy_(torch.from_numpy(window))
        else:
            self.host_in_np[:n] = window
        with torch.cuda.stream(self.stream):  # replay() launches on the current stream
            self.graphs[b].replay()
        self.stream.synchronize()
        return {name: arr[:n] for name, arr in self.outputs.items()}


def export_compiled(version_dir: Path, precision: str, max_batch: int) -> Path:
    """`rtvol export --compile`: compile as the sidecar does (each bucket, in its warm-up
    order, so the same graphs come out) and store TorchInductor's cache of it. The compile
    runs against empty private caches, so the store holds every kernel, none borrowed from
    this host's cache."""
    graph = onnx.load(str(Path(version_dir) / MODEL_FILE)).graph
    files = ModelFiles(Path(version_dir), graph.input[0].name, tuple(o.name for o in graph.output), max_batch)
    names = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")
    before = {name: os.environ.get(name) for name in names}
    with tempfile.TemporaryDirectory(prefix="rtvol-export-") as private:
        os.environ.update({name: str(Path(private) / name.lower()) for name in names})
        try:
            backend = CudaGraphBackend(files, precision, compile=True, use_stored=False)
            artifact.forget(files.version_dir, backend.key)
            backend.warmup(batch_buckets(max_batch))
            return artifact.save(files.version_dir, backend.key)
        finally:
            for name, value in before.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
