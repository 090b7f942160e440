"""Gateway settings (RTVOL_ env vars, flags win); names match charts/rtvol."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import NonNegativeInt, PositiveInt, field_validator, model_validator

from rtvol import sharding
from rtvol.config import ServiceSettings


class GatewaySettings(ServiceSettings):
    port: int = 8080
    """HTTP port: REST, /metrics, /livez, /readyz, /docs."""
    api_docs: bool = True
    """Serve /docs, /redoc and /openapi.json (operators only when auth is on)."""
    freeze_gc: bool = True
    """gc.freeze() after warm-up: a full collection then skips the warm-up heap (modules, models,
    clients), which unfrozen paused the loop for 50-100 ms under load (docs/BENCHMARKS.md, TAIL)."""
    grpc_port: int = 50051
    """gRPC port of rtvol.v1.Signals (Predict, PredictStream, Subscribe)."""
    metrics_port: int = 0
    """/metrics is on the HTTP port; a separate port only when set."""
    workers: int = 0
    """Worker processes sharing the HTTP and gRPC ports (SO_REUSEPORT), each holding every
    signal; 0: one per core this process may use (CPU affinity, cgroup CPU limit), one on a
    CPU other than x86-64 (the shared signal table needs its memory ordering); 1: one process,
    no supervisor."""
    worker: int = 0
    """Set by the supervisor for the process it starts as worker 1..workers; 0: not a worker."""
    redis_url: str = ""
    """Feature store and signal cache, redis://HOST:PORT/DB; empty: tier 3 and item errors only."""
    model_url: str = ""
    """Sidecar: unix:/sock/model.sock, 127.0.0.1:8001 or dns:///host:8001; empty: no tier 1."""
    feature_url: str = ""
    """Feature service gRPC, HOST:PORT[,HOST:PORT...]: every replica in ordinal order (as
    `rtvol feed --target`; each owns the stocks whose id mod replicas is its ordinal).
    /v1/universe asks each and merges; with precompute, the tick-to-signal pipeline follows
    each one's Watch stream (changed windows pushed, held in memory: Predict reads no Redis)."""
    feature_wait_s: float = 5.0
    """At start: how long to wait for every feature replica's Watch stream before serving (the
    stocks of a replica not followed yet are answered from the store)."""
    model_repository: Path = Path("models")
    """Where tier 2 (ONNX Runtime in the gateway) loads the same model version from."""
    model_name: str = "rtvol_cnn"
    """Model served (tiers 1 and 2)."""
    model_version: int | None = None
    """Pin tier 2 to this version. Default: the version the repository's version policy serves
    (the newest verified one unless `rtvol promote` pinned one), followed as it changes."""
    model_poll_s: float = 2.0
    """How often the repository's version policy is read (served and shadow versions); 0: never."""
    shadow_queue: int = 16
    """Tier-1 batches waiting for the shadow version; more are dropped (and counted)."""
    shadow_max_batch: int = 256
    """Most windows in one shadow call (queued batches coalesce up to it): a small call holds
    the event loop and the sidecar's CPU for less at a time."""
    shadow_timeout_ms: float = 1000.0
    """One shadow call; slower counts as a shadow error (never against the breaker)."""
    stocks: int = 8192
    """Ids 0..stocks-1 are known (as the feature service's --stocks)."""
    max_ids: int = 1024
    """Most stock ids in one request or Subscribe; more is a 4xx / INVALID_ARGUMENT."""
    http_max_connections: int = 4096
    """Open HTTP connections; more are closed as they are accepted."""
    http_limit_concurrency: int = 1024
    """HTTP requests in progress; more are answered 503."""
    http_request_timeout_s: float = 5.0
    """A request's headers and body must arrive within this, else its connection is closed."""
    http_keep_alive_s: int = 5
    """Idle keep-alive HTTP connections are closed after this."""
    http_max_body_bytes: int = 1 << 20
    """Larger request bodies are answered 413."""
    deadline_ms: float = 50.0
    """A whole predict, every tier included."""
    model_timeout_ms: float = 20.0
    """One tier-1 batch; slower is a failure for the breaker (a predict's tier 1 also ends 2 ms
    before --deadline-ms, so that tier 2 can still answer)."""
    model_latency_budget_ms: float = 5.0
    """Tier-1 batches slower than this count against the breaker: THE knob for a slower model
    server (a Triton on a busy CPU took 5-10 ms; docs/DEPLOY.md); at most --model-timeout-ms."""
    model_latency_budget_per_window_us: float = 25.0
    """Added to that budget and to model_timeout_ms per window after the first (a GPU sidecar:
    ~1 µs a window): a pipeline batch of hundreds of windows is not a slow sidecar. At least
    --model-latency-budget-tier2-factor times what tier 2 computes a window in on this host."""
    model_latency_budget_tier2_factor: float = 3.0
    """The per-window allowance is raised to this many times tier 2's own time a window, timed
    at start (ONNX Runtime on one core: 30-32 µs on the 2-core VM, where the sidecar's compute
    took 2-2.6x that while the feature service and gateway shared its cores): a tier-1 batch
    counts as slow when tier 2 would have answered it sooner even on a loaded host, not for
    the host's speed. 0: the configured allowance alone."""
    model_budget_judges: Literal["sidecar", "wall"] = "sidecar"
    """What the latency budget is judged on: the sidecar's own time for the call, which it
    reports (decode to encode; a server that does not report it is judged on wall time), or
    the wall time the gateway sees, which also holds delays of the gateway's own making (its
    tier-2 work on a shared CPU) that moving to tier 2 only makes worse. The timeout always
    bounds wall time."""
    model_wait_s: float = 5.0
    """At start: how long to wait for the sidecar to be ready before serving from tier 2."""
    model_probe_s: float = 1.0
    """How often the sidecar's ModelReady is asked; while it is not ready, tier 2 answers."""
    watch_rows: bool = True
    """Take the windows the feature service pushes as their newest rows (one step: 48 bytes,
    not the whole 2,400-byte window); --no-watch-rows: whole windows, as before."""
    watch_in_process: bool = True
    """In `rtvol serve embedded`: follow the feature service of the same process without gRPC
    (its messages handed over, not serialised); --no-watch-in-process: over gRPC, as a separate
    gateway does. Elsewhere it changes nothing."""
    model_shm_dir: Path | None = None
    """The sidecar runs on this host and maps system shared memory from this directory (its
    --shm-dir): big tier-1 batches go through a region there instead of in the request. None: off."""
    model_shm_bytes: int = 8 * 1024 * 1024
    """The region's size, per gateway worker: four slots, a batch larger than one goes in the request."""
    model_streams: int = 2
    """Long-lived ModelStreamInfer streams (spread over sidecar replicas)."""
    fanin_max_inflight: int = 1
    """Tier-1 batches out at once; requests arriving meanwhile share the next (at least
    pipeline_inflight: the pipeline's batches go through the same fan-in)."""
    pipeline_inflight: PositiveInt = 1
    """Tick-to-signal pipeline batches out at once per worker: a window that arrives during a
    tier-1 call leaves in a call of its own instead of waiting for that one (a stock waits for
    its own batch to settle: its signals stay in window-version order)."""
    max_batch: int = 1024
    """The sidecar's max_batch_size."""
    store_timeout_ms: float = 20.0
    """One feature-store read."""
    breaker_window: int = 20
    """Outcomes the breaker's error rate is computed over."""
    breaker_min_calls: int = 5
    """Outcomes needed in the window before the breaker may open."""
    breaker_error_rate: float = 0.5
    """Error rate (failures and over-budget calls) that opens the breaker."""
    breaker_open_s: float = 1.0
    """Time open before the first half-open probe."""
    breaker_probes: int = 2
    """Successful half-open probes that close the breaker."""
    breaker_probe_windows: NonNegativeInt = 8
    """The sidecar breaker's half-open probes send this many windows of the batch that
    carries them, one call per probe, and the rest once it has closed (0: the whole batch
    is the probe): a probe judges the sidecar, not the size of the batch it came with."""
    vol_refresh_s: float = 0.2
    """Refresh period of the tier-3 volatility estimates."""
    precompute: bool = True
    """Pre-compute signals as windows change and push them to Subscribe: from the feature
    service's Watch stream when feature_url is set, else by polling the store's change stream."""
    precompute_poll_s: float = 0.005
    """Change-stream poll period (only without feature_url)."""
    cache_size: int = 65_536
    """In-process signal LRU entries."""
    ort_threads: int = 1
    """Tier-2 ONNX Runtime intra-op threads."""
    kelly_cap: float = 0.25
    """Largest |Kelly fraction| returned."""
    kelly_target_vol: float = 0.003
    """Sizes are scaled down when the predicted RV is above this."""

    @property
    def feature_urls(self) -> list[str]:
        """The feature-service replicas, in ordinal order (none when feature_url is empty)."""
        return sharding.targets(self.feature_url)

    @field_validator("feature_url")
    @classmethod
    def _one_target_per_replica(cls, url: str) -> str:
        if url.strip() and len(sharding.targets(url)) != len(url.split(",")):
            raise ValueError(f"feature_url: an empty replica in {url!r} (HOST:PORT[,HOST:PORT...])")
        return url

    @model_validator(mode="after")
    def _tier1_budget_nests(self) -> Self:
        """budget <= timeout, budget < deadline: a budget above either never trips the breaker
        (the call has failed or been cut at the deadline first)."""
        if not 0 < self.model_latency_budget_ms <= self.model_timeout_ms or (
                self.model_latency_budget_ms >= self.deadline_ms):
            raise ValueError(
                f"model_latency_budget_ms ({self.model_latency_budget_ms:g}) must be above 0, at most "
                f"model_timeout_ms ({self.model_timeout_ms:g}) and below deadline_ms ({self.deadline_ms:g})")
        return self
