"""Gateway settings (RTVOL_ env vars, flags win); names match charts/rtvol."""

from __future__ import annotations

from pathlib import Path

from rtvol.config import ServiceSettings


class GatewaySettings(ServiceSettings):
    port: int = 8080  # REST, /metrics, /livez, /readyz
    grpc_port: int = 50051
    metrics_port: int = 0  # /metrics is on the HTTP port; a separate one only when asked
    redis_url: str = ""  # empty: no feature store (tier 3 and item errors only)
    model_url: str = ""  # unix:/sock/model.sock, 127.0.0.1:8001 or dns:///host:8001; empty: no tier 1
    feature_url: str = ""  # feature service gRPC, for /v1/universe
    model_repository: Path = Path("models")
    model_name: str = "rtvol_cnn"
    model_version: int | None = None  # default: the latest version at start
    stocks: int = 8192  # ids 0..stocks-1 are known (as the feature service's --stocks)
    max_ids: int = 1024  # per request
    deadline_ms: float = 50.0  # a whole predict, every tier included
    model_timeout_ms: float = 20.0  # one tier-1 batch
    model_latency_budget_ms: float = 5.0  # slower tier-1 batches count against the breaker
    model_streams: int = 2  # long-lived ModelStreamInfer streams (spread over replicas)
    fanin_window_us: int = 200  # how long a batch waits for concurrent requests
    max_batch: int = 1024  # the sidecar's max_batch_size
    store_timeout_ms: float = 20.0  # one feature-store read
    breaker_window: int = 20  # outcomes the error rate is computed over
    breaker_min_calls: int = 5
    breaker_error_rate: float = 0.5
    breaker_open_s: float = 1.0  # before the first half-open probe
    breaker_probes: int = 2  # successful probes that close it
    vol_refresh_s: float = 0.2  # tier-3 estimate refresh
    precompute: bool = True  # consume the change stream and push signals
    precompute_poll_s: float = 0.005
    cache_size: int = 65_536  # in-process signal LRU entries
    ort_threads: int = 1
    kelly_cap: float = 0.25
    kelly_target_vol: float = 0.003  # size is scaled down when predicted RV is above this
