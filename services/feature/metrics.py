"""Prometheus metrics of the feature service (created once, at import)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from rtvol.telemetry import BATCH_BUCKETS, LATENCY_BUCKETS

UPDATES = Counter("rtvol_feature_updates_total", "Market updates accepted into the online state")
REJECTS = Counter("rtvol_feature_rejects_total", "Market updates (and watermarks) rejected, by reason",
                  ["reason"])
NONFINITE_WINDOWS = Counter("rtvol_feature_nonfinite_windows_total",
                            "Windows not written because they held a non-finite value")
RECOVERED = Counter("rtvol_feature_recovered_stocks_total",
                    "Stocks whose state was restored from the store at start, by source", ["source"])
BAD_REQUESTS = Counter("rtvol_feature_bad_requests_total",
                       "Calls answered INVALID_ARGUMENT, by method and reason", ["method", "reason"])
BATCH = Histogram("rtvol_feature_ingest_batch_size", "Updates per ingest message", buckets=BATCH_BUCKETS)
MESSAGES_PER_APPLY = Histogram("rtvol_feature_ingest_messages_per_apply",
                               "Ingest messages of one stream applied together", buckets=BATCH_BUCKETS)
APPLY = Histogram("rtvol_feature_apply_seconds", "Online state work per ingest message",
                  buckets=LATENCY_BUCKETS)
STORE = Histogram("rtvol_feature_store_seconds", "Feature store round trips", ["op"],
                  buckets=LATENCY_BUCKETS)
STALENESS = Gauge("rtvol_feature_window_staleness_seconds",
                  "Wall time since the oldest dirty window was marked, at its flush")
VOL_AGE = Gauge("rtvol_feature_vol_estimate_age_seconds", "Age of the background volatility estimate")
GET = Histogram("rtvol_feature_get_seconds", "GetFeatures latency", buckets=LATENCY_BUCKETS)
FANOUT_DEPTH = Gauge("rtvol_feature_fanout_queue_depth", "Batches waiting in a fan-out consumer's queue",
                     ["consumer"])
FANOUT_DROPS = Counter("rtvol_feature_fanout_drops_total",
                       "Batches a full fan-out queue dropped (its overflow policy)", ["consumer"])
ALERTS = Counter("rtvol_feature_alerts_total", "Risk alerts published, by kind (stocks alerted)", ["kind"])
TICKLOG_ROWS = Counter("rtvol_feature_ticklog_rows_total", "Updates written to the on-disk tick log")
TICKLOG_RECOVERED = Counter("rtvol_feature_ticklog_recovered_rows_total",
                            "Rows recovered at start from tick-log files a crash left open")
WATCH_BATCH = Histogram("rtvol_feature_watch_batch_size", "Windows per batch pushed to watching gateways",
                        buckets=BATCH_BUCKETS)
WATCH_ACK = Histogram("rtvol_feature_watch_ack_seconds",
                      "End of an Ingest call: until every watcher acknowledged its windows",
                      buckets=LATENCY_BUCKETS)
WATCH_DROPPED = Counter("rtvol_feature_watch_dropped_total",
                        "Watchers dropped (queue full or no acknowledgement in time)", ["reason"])
WATCH_LEASE_WAITS = Counter("rtvol_feature_watch_lease_waits_total",
                            "Ingest calls that waited out the lease of a watcher that left (dropped or "
                            "disconnected) before returning")
