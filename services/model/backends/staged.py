"""Ready in about a second on a GPU host: ONNX Runtime on the CPU answers while the CUDA
graphs warm up beside it, then the CUDA graphs take over.

Before the CUDA-graph backend answers, torch must be imported (3-5 s), the stored compile
cache loaded (6 s) and every batch bucket traced and captured (7 s): 19 s from start on an
H200 (docs/BENCHMARKS.md). ONNX Runtime on the CPU loads in well under a second and computes
the very outputs the GPU's parity is judged against (batch 1 in ~70 µs; large batches are
slower). So the sidecar is ready on it, while a thread of this backend builds and warms the
CUDA-graph backend; once every bucket is captured it serves from the next call on (one
attribute swap: the calls run on one thread, each on the backend it started on). If that
build fails, ONNX Runtime keeps serving: logged and counted
(rtvol_model_compile_fallbacks_total{reason="staged_gpu_failed"}).

The build compiles in this process (no TorchInductor worker pool: nothing to wait for at
SIGTERM); with the stored compile cache there is nothing to compile anyway.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from rtvol.services.model import metrics
from rtvol.services.model.backends.base import Backend, BackendUnavailable, ModelFiles
from rtvol.services.model.backends.onnxrt import OnnxRuntimeBackend

log = logging.getLogger(__name__)


def cuda_device_present() -> bool:
    """A CUDA device and torch, asked without importing torch (seconds): the driver's
    cuInit and cuDeviceGetCount through ctypes."""
    if importlib.util.find_spec("torch") is None:
        return False
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    count = ctypes.c_int(0)
    return cuda.cuInit(0) == 0 and cuda.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0


class StagedBackend:
    """ONNX Runtime (CPU) until ``build()``'s backend is warm, then that one."""

    def __init__(self, files: ModelFiles, name: str, build: Callable[[], Backend], threads: int = 1) -> None:
        self.files, self.build = files, build
        self.cpu = OnnxRuntimeBackend(files, "cpu", threads)
        self.current: Backend = self.cpu
        self.name = name
        self.done = threading.Event()  # set once the GPU serves or its build failed
        self.thread: threading.Thread | None = None
        self.started = time.perf_counter()

    def infer(self, window: np.ndarray) -> dict[str, np.ndarray]:
        return self.current.infer(window)

    @property
    def input_buffer(self) -> np.ndarray | None:
        """The serving backend's (the GPU's, once it took over: it never hands back)."""
        return getattr(self.current, "input_buffer", None)

    @property
    def on_gpu(self) -> bool:
        return bool(getattr(self.current, "on_gpu", False))

    def warmup(self, buckets: Sequence[int]) -> None:
        self.cpu.warmup(buckets)
        self.thread = threading.Thread(target=self._take_over, args=(tuple(buckets),),
                                       name="gpu-warmup", daemon=True)  # SIGTERM never waits on it
        self.thread.start()

    def _take_over(self, buckets: tuple[int, ...]) -> None:
        model = self.files.version_dir.parent.name
        try:
            gpu = self.build()
            gpu.warmup(buckets)
        except Exception as e:  # BackendUnavailable, CUDA or compile errors: the CPU still serves
            metrics.COMPILE_FALLBACKS.labels(model, "staged_gpu_failed").inc()
            log.error("%s: the GPU backend failed to start (%s: %s); ONNX Runtime on the CPU keeps "
                      "serving", model, type(e).__name__, e)
        else:
            self.current = gpu
            log.info("%s: %s serves from now on, %.1f s after the backend was created",
                     model, gpu.name, time.perf_counter() - self.started)
        finally:
            self.done.set()


def staged_cuda_graphs(files: ModelFiles, precision: str, threads: int) -> StagedBackend:
    """The CUDA-graph backend (compiled where Triton imports) behind ONNX Runtime on the CPU."""
    if not cuda_device_present():
        raise BackendUnavailable("no CUDA device (or no torch)")

    def build() -> Backend:
        import torch._inductor.config

        from rtvol.services.model.backends.cuda_graph import CudaGraphBackend

        torch._inductor.config.compile_threads = 1  # in process: no worker pool (see the docstring)
        return CudaGraphBackend(files, precision)

    return StagedBackend(files, f"staged-torch-cudagraph-{precision}", build, threads)
