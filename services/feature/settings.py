"""Feature service settings (RTVOL_ env vars, flags win)."""

from __future__ import annotations

from typing import Literal

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
    # GetFeatures from this process's online state (it owns the stocks); "store": read Redis
    features_from: Literal["memory", "store"] = "memory"
    fanout_queue: int = 256  # batches each fan-out consumer may hold before its overflow policy drops
    ticklog_dir: str = ""  # empty: no tick log
    ticklog_max_rows: int = 1_000_000  # rows per tick-log file before it rotates
    ticklog_max_files: int = 100  # complete files kept; older ones are deleted
    alerts: bool = True  # risk alerts on Redis pub/sub (counted only with the in-process store)
    alert_spike_sigmas: float = 6.0
    alert_stale_after_s: float = 5.0
