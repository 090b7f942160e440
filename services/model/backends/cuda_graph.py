"""PyTorch CUDA graphs: one graph captured per batch bucket over static buffers.

Each graph holds the whole request: the copy from a pinned host input buffer, the model,
and one copy of all outputs (packed side by side, see packed.py) into a pinned host
buffer. Per request that leaves one copy into the pinned input, one graph launch and one
stream sync; nothing is allocated after warm-up. Convolutions run in fp16/bf16, the rest
in fp32 (see TorchGraph); sibling dense heads run as one GEMM.

Where the model is rtvol_cnn and Triton imports, the whole network is ONE hand-written
Triton kernel (fused_cnn.py), checked against the ONNX graph on the GPU before it serves;
it reads and writes the pinned host buffers itself, so each graph is that one node and
TorchInductor compiles nothing. Otherwise, with ``compile`` (default where Triton imports)
the model runs TorchInductor's fused kernels: inside a CUDA graph each kernel still costs
~2 µs on an H100/H200, so the kernel count is the latency. torch.compile finds them in the
compile cache `rtvol export --compile` stored for this machine (artifact.py), else compiles
them at start (tens of seconds).
"""

from __future__ import annotations

import bisect
import importlib.util
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnx
import torch

from rtvol.repository import MODEL_FILE
from rtvol.services.model import metrics
from rtvol.services.model.backends import artifact, fused_cnn
from rtvol.services.model.backends.base import BackendUnavailable, ModelFiles, batch_buckets
from rtvol.services.model.backends.packed import PRECISIONS, packed_model

# from this many rows (600 KB) copy into the pinned input with torch's intra-op threads, not
# numpy's one: expected ~4x faster at 1024 rows (2.4 MB), not yet measured (BENCHMARKS.md)
THREADED_COPY_ROWS = 256
# a window read from system shared memory is a read-only view (services/model/shm.py); torch
# only reads it here (into the pinned input), so its warning about non-writable arrays is noise
warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)
FUSED_PRECISIONS = ("fp16", "bf16")  # the kernel's dots; fp32 keeps the generic path
FUSED_TOLERANCE = 1e-2  # the parity tests' half-precision criterion, checked before the kernel serves

log = logging.getLogger(__name__)


def can_compile() -> bool:
    return importlib.util.find_spec("triton") is not None


class CudaGraphBackend:
    def __init__(self, files: ModelFiles, precision: str = "fp16",
                 compile: bool | None = None, conv_matmul: bool = True, use_stored: bool = True,
                 fused: bool | None = None) -> None:
        if not torch.cuda.is_available():
            raise BackendUnavailable("torch sees no CUDA device")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {tuple(PRECISIONS)}, not {precision!r}")
        self.device = torch.device("cuda")
        self.model = packed_model(files.onnx, self.device, precision, conv_matmul)
        self.forward: Callable[[torch.Tensor], torch.Tensor] = self.model
        self.fused = self._fused(files, precision) if fused is not False and can_compile() else None
        self.compiled = self.fused is None and (can_compile() if compile is None else compile)
        kind = "-fused" if self.fused else "-compiled" if self.compiled else ""
        self.name = f"torch-cudagraph-{precision}{kind}"
        self.source = "one fused Triton kernel" if self.fused else "eager"
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
        self.input_buffer = self.host_in_np  # the batcher concatenates a batch straight into it
        self._input_address = self.host_in.data_ptr()
        self.host_out = torch.zeros((self.max_batch, sum(self.model.widths)), pin_memory=True)
        self.outputs = self.model.unpack(self.host_out.numpy())
        self.stream = torch.cuda.Stream()
        self._stream_ids = (self.stream.stream_id, self.stream.device_index, self.stream.device_type)
        self._device_index = self.stream.device_index
        self.on_gpu = True  # shadow.py does not slice a GPU backend's shadow batches
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.buckets: list[int] = []

    def _fused(self, files: ModelFiles, precision: str) -> fused_cnn.FusedCnn | None:
        """The one-kernel network where this model is rtvol_cnn and the kernel agrees with the
        ONNX graph (run by torch here) on the GPU; else None: the generic path serves."""
        model = files.version_dir.parent.name
        spec = fused_cnn.extract(onnx.load(str(files.onnx))) if precision in FUSED_PRECISIONS else None
        if spec is None:
            return None
        try:
            kernel = fused_cnn.FusedCnn(spec, self.device, PRECISIONS[precision] or torch.float32)
            windows = torch.from_numpy(np.random.default_rng(0).lognormal(-6, 1, (64, *self.model.input_dims))
                                       .astype(np.float32)).to(self.device)
            with torch.no_grad():
                want = self.model(windows)
            got = kernel(windows, torch.empty_like(want))
            scale = torch.sqrt(torch.mean(want ** 2, dim=0))  # per column: the RMS floor
            error = float(((got - want).abs() / torch.maximum(want.abs(), scale)).max())
        except Exception as e:  # a kernel that fails to build: the generic path still serves
            metrics.COMPILE_FALLBACKS.labels(model, "fused_failed").inc()
            log.warning("%s: the fused kernel failed (%s: %s); serving the generic graph", model,
                        type(e).__name__, e)
            return None
        if not error <= FUSED_TOLERANCE:  # NaN fails too
            metrics.COMPILE_FALLBACKS.labels(model, "fused_mismatch").inc()
            log.warning("%s: the fused kernel differs from the ONNX graph by %.3g (> %g); serving the "
                        "generic graph", model, error, FUSED_TOLERANCE)
            return None
        log.info("%s: one fused Triton kernel serves (largest difference from the graph %.2g)", model, error)
        return kernel

    def _request(self, b: int) -> None:
        """What one graph replays: input copy, model, output copy (pinned host <-> device).
        The fused kernel alone is the whole graph: it reads and writes the pinned host buffers
        in place (mapped memory), one node instead of three: on the H200 batch 1 p50 34.9 µs
        against 47.7 µs with the two copies, batch 1024 6.9 M against 4.6 M inferences/s."""
        if self.fused is not None:
            self.fused(self.host_in[:b], self.host_out[:b])
            return
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
        if window.__array_interface__["data"][0] == self._input_address:
            pass  # already in the pinned input (a batch the batcher concatenated into input_buffer)
        elif n >= THREADED_COPY_ROWS:
            self.host_in[:n].copy_(torch.from_numpy(window))
        else:
            self.host_in_np[:n] = window
        # on the backend's own stream, never the caller's (the default stream, shared with
        # any other backend in the process, e.g. a shadow version's): a served replay then
        # never queues on the GPU behind another model's work. torch.cuda.stream() (or
        # current_stream()/set_stream()) builds Stream objects, µs each on the batch-1 path:
        # the ids go to the same C functions those call
        caller = torch._C._cuda_getCurrentStream(self._device_index)  # (id, device index, type)
        _set_stream(self._stream_ids)
        try:
            self.graphs[b].replay()
        finally:
            _set_stream(caller)
        self.stream.synchronize()
        return {name: arr[:n] for name, arr in self.outputs.items()}


def _set_stream(ids: tuple[int, int, int]) -> None:
    """The calling thread's current CUDA stream, by (stream id, device index, device type)."""
    torch._C._cuda_setStream(stream_id=ids[0], device_index=ids[1], device_type=ids[2])


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
            backend = CudaGraphBackend(files, precision, compile=True, use_stored=False, fused=False)
            artifact.forget(files.version_dir, backend.key)
            backend.warmup(batch_buckets(max_batch))
            return artifact.save(files.version_dir, backend.key)
        finally:
            for name, value in before.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
