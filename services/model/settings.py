"""Model sidecar settings (RTVOL_ env vars, flags win); names match charts/rtvol."""

from __future__ import annotations

from pathlib import Path

from pydantic import NonNegativeInt, PositiveFloat

from rtvol.config import ServiceSettings


class ModelSettings(ServiceSettings):
    port: int = 8001
    """gRPC port (Triton's default); 0 picks a free one and prints it."""
    metrics_port: int = 8002
    """Prometheus /metrics port (Triton's default); 0: none."""
    unix_socket: str | None = None
    """Also serve on this Unix socket, e.g. /run/rtvol/model.sock for a gateway in the pod."""
    shm_dir: Path | None = None
    """System shared memory (Triton's extension): a gateway on this host may register regions of
    objects directly in this directory (/dev/shm, or a memory volume shared in the pod) and send
    windows through them instead of in its requests. None: off."""
    shm_max_bytes: int = 1 << 30
    """Bytes of shared memory all registered regions may map together; more is refused."""
    model_repository: Path = Path("models")
    """Triton-layout repository; each model's version policy names the version served and
    the one in shadow (default: the newest verified version, no shadow; `rtvol promote`)."""
    backend: str = "auto"
    """auto | onnxruntime | onnxruntime-cpu | cudagraph | cudagraph-compiled | cudagraph-eager |
    cudagraph-staged | tensorrt."""
    precision: str = "fp16"
    """CUDA-graph backend: fp16 | bf16 | fp32 (the convolutions; the heads stay fp32)."""
    max_queue_delay_us: int | None = None
    """Dynamic batching window; default: the model's config.pbtxt."""
    compute_thread: bool = True
    """Run big batches on a backend thread, off the event loop."""
    inline_max_rows: int = 8
    """Batches up to this many rows run on the event loop (cheaper than a thread hop)."""
    idle_dispatch: bool = True
    """An idle batcher sends at once; --no-idle-dispatch always waits the queue delay."""
    max_queue_rows: int = 16_384
    """Rows waiting for a batch, all streams together; more is RESOURCE_EXHAUSTED."""
    max_queue_bytes: int = 64 * 1024 * 1024
    """Input bytes waiting for a batch; more is RESOURCE_EXHAUSTED."""
    stream_max_inflight: int = 128
    """Requests one ModelStreamInfer stream has unanswered (or answered, unsent) before the
    sidecar stops reading it (gRPC flow control then holds the client back)."""
    shadow_slice_rows: NonNegativeInt = 16
    """A shadow version's batch is computed this many windows at a time, checking between
    slices for served requests and pausing while there are some (0: whole, no yielding).
    CPU backends only: a GPU backend computes on a stream of its own and is never sliced."""
    shadow_max_pause_ms: PositiveFloat = 250.0
    """A shadow batch paused longer than this for served work is dropped (counted)."""
    ort_threads: int = 1
    """ONNX Runtime intra-op threads."""
    poll_seconds: float = 2.0
    """How often the repository is polled for new versions and version policies; 0 disables."""
    debug_delay_ms: float = 0.0
    """Fault injection for tests: every inference waits this long."""
