"""Feature service settings (RTVOL_ env vars, flags win)."""

from __future__ import annotations

from rtvol.config import ServiceSettings


class FeatureSettings(ServiceSettings):
    port: int = 50052
    metrics_port: int = 9102
    redis_url: str = ""  # empty: the in-process store (embedded single-process default)
    redis_cluster: bool = False  # use redis-py's cluster client
    redis_ttl_s: int = 3600
    stream_maxlen: int = 10_000  # change-stream entries kept (approximately)
    stocks: int = 8192  # stock ids 0..stocks-1 are known; others are rejected
    max_batch: int = 65_536  # updates per ingest message; a larger one is rejected whole
    vol_interval_s: float = 0.15  # background volatility estimate cadence
    vol_halflife_steps: float = 10.0
    flush_interval_s: float = 0.005  # how long written windows may wait to be coalesced
