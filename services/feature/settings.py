"""Feature service settings (RTVOL_ env vars, flags win)."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from rtvol.config import ServiceSettings


class FeatureSettings(ServiceSettings):
    port: int = 50052
    """gRPC port (Ingest, GetFeatures, GetVwap, Universe); 0 picks a free one."""
    stream_port: int = 0
    """Framed Ingest stream port (feeders: frames of a length and a serialized IngestRequest, far
    cheaper a message than gRPC; rtvol/ingest_frames.py); TLS and API keys as the gRPC port; 0: off."""
    stream_max_connections: int = 16
    """Framed Ingest connections open at once; one more is answered an ERROR frame and closed."""
    stream_max_frame_bytes: int = 16 << 20
    """Largest framed Ingest frame; a longer one is answered an ERROR frame and the connection closed."""
    metrics_port: int = 9102
    """Prometheus /metrics port; 0: none."""
    redis_url: str = ""
    """redis://HOST:PORT/DB, unix:///PATH.sock?db=DB or redis+cluster://HOST:PORT (any node);
    empty: the in-process store (the embedded single-process default)."""
    redis_cluster: bool = False
    """Use redis-py's cluster client for a redis:// URL (as redis+cluster:// does)."""
    redis_ttl_s: int = 3600
    """TTL of every feature-window key."""
    stream_maxlen: int = 10_000
    """Change-stream entries kept (approximately)."""
    stocks: int = 8192
    """Stock ids 0..stocks-1 are known; others are rejected."""
    replicas: int = 1
    """Feature-service replicas: each owns the stocks whose id mod replicas is its ordinal and
    rejects the others' updates (not_owned); GetFeatures then reads the store."""
    replica: int = -1
    """This replica's ordinal; -1: the trailing number of the host name (a StatefulSet pod's)."""
    max_batch: int = 65_536
    """Updates per ingest message; a larger message is rejected whole."""
    max_sequence_gap: int = 1_000_000
    """An update whose sequence number jumps further past its stock's last one is rejected (sequence_jump)."""
    max_time_ahead_s: float = 86_400.0
    """An update whose event time jumps further past its stock's last one (a stock's first update:
    past the stream's clock) is rejected (time_jump)."""
    max_watermark_ahead_s: float = 600.0
    """A watermark further past the stream's clock (latest accepted event time or watermark) is
    rejected (watermark_ahead)."""
    vol_interval_s: float = 0.15
    """Cadence of the background volatility estimate (the gateway's tier 3)."""
    vol_halflife_steps: float = 10.0
    """EWMA half-life of the volatility estimate, in feature steps."""
    flush_interval_s: float = 0.0
    """How long changed windows may wait to be coalesced into one Redis pipeline; 0: written on
    the next loop turn (changes coalesce by themselves while a write is in flight). Signals do
    not wait for it: gateways get changed windows pushed (Watch)."""
    max_batch_pushed: int = 1024
    """Most windows in one message pushed to watching gateways (the sidecar's max batch)."""
    watch_ack_timeout_s: float = 1.0
    """How long the end of an Ingest call waits for every watching gateway to acknowledge the
    windows it changed; a watcher slower than this is dropped (it reconnects)."""
    watch_inflight: int = Field(2, ge=1)
    """Messages a watching gateway may hold unacknowledged; its windows that change meanwhile
    wait, each its newest version, and leave together with its next acknowledgement (a gateway
    that falls behind gets fewer, larger messages rather than a backlog)."""
    watch_lease_s: float = 0.0
    """How long a watching gateway may answer from the windows it holds after sending its last
    acknowledgement (the Watch stream tells it; idle streams get heartbeats every quarter of
    it). An Ingest call that dropped a watcher ends only once that watcher's lease ran out.
    0: half of watch_ack_timeout_s; must be below it."""

    @model_validator(mode="after")
    def _lease_below_ack_timeout(self) -> Self:
        """A lease at least the ack timeout would let a dropped gateway answer from old windows
        for longer than an Ingest call waits for it."""
        if not 0 <= self.watch_lease_s < self.watch_ack_timeout_s:
            raise ValueError(f"watch_lease_s ({self.watch_lease_s:g}) must be at least 0 and below "
                             f"watch_ack_timeout_s ({self.watch_ack_timeout_s:g})")
        return self

    @property
    def lease_s(self) -> float:
        return self.watch_lease_s or self.watch_ack_timeout_s / 2
    device: Literal["cpu", "cuda"] = "cpu"
    """Where the online state lives: cpu (numpy) or cuda (every stock's state on the GPU, each
    Ingest batch applied by Triton kernels; needs torch with CUDA and triton)."""
    features_from: Literal["memory", "store"] = "memory"
    """GetFeatures from this process's online state (it owns the stocks), or from the store."""
    fanout_queue: int = 256
    """Batches each fan-out consumer may hold before its overflow policy drops."""
    ticklog_dir: str = ""
    """Directory of the rotating Arrow tick log (`rtvol data from-ticklog` reads it); empty: off."""
    ticklog_max_rows: int = 1_000_000
    """Rows per tick-log file before it rotates."""
    ticklog_max_bytes: int = 256 << 20
    """Bytes per tick-log file before it rotates."""
    ticklog_max_age_s: float = 3600.0
    """Seconds a tick-log file stays open before it rotates."""
    ticklog_fsync_interval_s: float = 1.0
    """The open tick-log file is fsynced this often (and at every rotation): a crash loses at most that."""
    ticklog_max_files: int = 100
    """Complete tick-log files kept; older ones are deleted."""
    alerts: bool = True
    """Risk alerts on Redis pub/sub (counted only with the in-process store)."""
    alert_spike_sigmas: float = 6.0
    """A volatility-spike alert fires on a WAP return over this many EWMA sigmas."""
    alert_stale_after_s: float = 5.0
    """A stale-feed alert fires when a stock has had no update for this long."""

