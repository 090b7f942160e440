"""Prometheus metrics of the sidecar (docs/ARCHITECTURE.md: rtvol_ prefix, seconds, 10 µs buckets)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from rtvol.telemetry import BATCH_BUCKETS, LATENCY_BUCKETS

REQUESTS = Counter("rtvol_model_requests", "Inference requests received", ["model"])
SUCCESSES = Counter("rtvol_model_request_successes", "Inference requests answered", ["model"])
FAILURES = Counter("rtvol_model_request_failures", "Inference requests refused or failed",
                   ["model", "reason"])
QUEUE = Histogram("rtvol_model_queue_seconds", "Time a request waited for its batch",
                  ["model"], buckets=LATENCY_BUCKETS)
COMPUTE = Histogram("rtvol_model_compute_seconds", "Backend time per batch",
                    ["model", "backend"], buckets=LATENCY_BUCKETS)
REQUEST = Histogram("rtvol_model_request_seconds", "Server time per request, decode to encode",
                    ["model"], buckets=LATENCY_BUCKETS)
BATCH = Histogram("rtvol_model_batch_size", "Rows per executed batch", ["model"],
                  buckets=BATCH_BUCKETS)
COMPILE_FALLBACKS = Counter("rtvol_model_compile_fallbacks",
                            "Model loads that compiled at start: no compiled package fit this machine",
                            ["model", "reason"])
REFUSED = Counter("rtvol_model_refused", "Model versions refused (files differ from their recorded "
                  "digests, a pinned version is missing) and malformed version policies (bad_policy)",
                  ["model", "reason"])
LOADED = Gauge("rtvol_model_loaded_version", "Version being served", ["model", "backend"])
SHADOW_PAUSED = Counter("rtvol_model_shadow_paused", "Shadow batch slices that waited for served work "
                        "before computing", ["model"])
SHADOW_DROPPED = Counter("rtvol_model_shadow_dropped_rows", "Shadow rows dropped uncomputed: served work "
                         "kept the sidecar busy longer than --shadow-max-pause-ms", ["model"])
SHADOW = Gauge("rtvol_model_shadow_version", "Version loaded in shadow (0: none)", ["model"])


class ModelMetrics:
    """One model's labelled children, looked up once (a labels() call costs a lock and a
    dict lookup per request)."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.requests = REQUESTS.labels(model)
        self.successes = SUCCESSES.labels(model)
        self.request_seconds = REQUEST.labels(model)
        self._failures: dict[str, Counter] = {}

    def failed(self, reason: str) -> None:
        child = self._failures.get(reason)
        if child is None:  # reasons are a small fixed set of literals
            child = self._failures[reason] = FAILURES.labels(self.model, reason)
        child.inc()


_BY_MODEL: dict[str, ModelMetrics] = {}


def for_model(label: str) -> ModelMetrics:
    """Cached per label; callers pass a served model name or 'unknown', so this stays bounded."""
    found = _BY_MODEL.get(label)
    if found is None:
        found = _BY_MODEL[label] = ModelMetrics(label)
    return found
