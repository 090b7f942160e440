"""Gateway metrics (names start with rtvol_gateway_; durations in seconds)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from rtvol.telemetry import BATCH_BUCKETS, LATENCY_BUCKETS

REQUEST = Histogram("rtvol_gateway_request_seconds", "Predict duration by route and the slowest tier used",
                    ["route", "tier"], buckets=LATENCY_BUCKETS)
ANSWERS = Counter("rtvol_gateway_answers_total", "Per-stock answers by tier", ["tier"])
NON_FINITE = Counter("rtvol_gateway_non_finite_outputs_total", "Model answers with NaN/inf, never "
                     "served: tier 1's go to tier 2 (per batch), tier 2's to tier 3 (per stock)", ["tier"])
ITEM_ERRORS = Counter("rtvol_gateway_item_errors_total", "Stocks that could not be answered", ["reason"])
REJECTS = Counter("rtvol_gateway_rejects_total", "Requests refused as bad input", ["route", "reason"])
BATCH = Histogram("rtvol_gateway_fanin_batch_size", "Windows per tier-1 batch (fan-in)",
                  buckets=BATCH_BUCKETS)
# gauges across worker processes (services/gateway/multiproc.py): the worst breaker, and
# connected only while every worker's Watch stream is
BREAKER_STATE = Gauge("rtvol_gateway_breaker_state", "0 closed, 1 half-open, 2 open", ["upstream"],
                      multiprocess_mode="livemax")
BREAKER_TRANSITIONS = Counter("rtvol_gateway_breaker_transitions_total", "Breaker state changes",
                              ["upstream", "to"])
TIER1_SECONDS = Histogram("rtvol_gateway_tier1_seconds", "Answered tier-1 batches by the breaker's state "
                          "when sent (closed; half_open: a probe): the wall time the gateway saw and the "
                          "sidecar's own time (decode to encode) it reported; the difference "
                          "is the hop and the gateway's own delays", ["part", "breaker"],
                          buckets=LATENCY_BUCKETS)
TIER1_OVER_BUDGET = Counter("rtvol_gateway_tier1_over_budget_total", "Answered tier-1 batches judged over "
                            "the latency budget, by the breaker's state when sent", ["breaker"])
SIDECAR_SHM = Counter("rtvol_gateway_sidecar_shared_memory_total", "Tier-1 calls big enough for shared "
                      "memory, by how their windows went (shared_memory; request: every slot held, or "
                      "the sidecar has none registered)", ["via"])
UPSTREAM_ERRORS = Counter("rtvol_gateway_upstream_errors_total", "Failed upstream calls",
                          ["upstream", "kind"])
CACHE = Counter("rtvol_gateway_cache_total", "Signal cache lookups", ["result"])
FEATURE_AGE = Histogram("rtvol_gateway_feature_age_seconds", "Age of the features behind an answer",
                        buckets=LATENCY_BUCKETS)
PRECOMPUTED = Counter("rtvol_gateway_precomputed_total", "Signals pre-computed from the change stream")
PUSH_DROPPED = Counter("rtvol_gateway_push_dropped_total",
                       "Signals a slow subscriber never got: a newer signal of the same stock replaced "
                       "them before it took them (it gets every stock's newest)")
MEMORY = Counter("rtvol_gateway_memory_answers_total",
                 "Predict answers from held windows: current signal, waited for its batch, computed "
                 "from the window held, or (stored) from the store where another worker holds it and "
                 "its signal was late",
                 ["result"])
PIPELINE_SIGNALS = Counter("rtvol_gateway_pipeline_signals_total", "Signals the pipeline pushed, by tier",
                           ["tier"])
PIPELINE_BATCH = Histogram("rtvol_gateway_pipeline_batch_size", "Stocks inferred per pipeline wake-up",
                           buckets=BATCH_BUCKETS)
TICK_TO_SIGNAL = Histogram("rtvol_gateway_tick_to_signal_seconds",
                           "Feature service's receipt of an update to its signal reaching a Subscribe client",
                           buckets=LATENCY_BUCKETS)
PIPELINE_STAGE = Histogram("rtvol_gateway_pipeline_stage_seconds",
                           "Tick-to-signal by stage: feature (update received -> window held here), "
                           "gateway (window held -> signal pushed)", ["stage"], buckets=LATENCY_BUCKETS)
PIPELINE_HOP = Histogram("rtvol_gateway_pipeline_hop_seconds",
                         "Tick-to-signal hop by hop, per pipeline batch (its oldest receipt): each hop of "
                         "rtvol/pipeline_hops.py from the one before it (stored only when the store write "
                         "came before the Watch push)", ["hop"], buckets=LATENCY_BUCKETS)
WATCH_BATCHES = Counter("rtvol_gateway_watch_batches_total",
                        "Window batches received from each feature-service replica (its ordinal)",
                        ["replica"])
LEASE_LAPSED = Counter("rtvol_gateway_memory_lease_lapsed_total",
                       "Stocks of a Predict read from the store although their window is held: the "
                       "Watch stream's lease ran out (a stalled stream; read-your-writes)")
WATCH_CONNECTED = Gauge("rtvol_gateway_watch_connected",
                        "1 while a feature-service replica's Watch stream is open and delivering",
                        ["replica"], multiprocess_mode="livemin")
WATCH_IN_PROCESS = Gauge("rtvol_gateway_watch_in_process",
                         "Whether a feature-service replica's Watch stream is followed in this process "
                         "(rtvol serve embedded: no gRPC hop): 1 while it is", ["replica"],
                         multiprocess_mode="livesum")
MODEL_SIGNALS = Counter("rtvol_gateway_model_signals_total",
                        "Model outputs by version, tier and role (serving: answered; shadow: computed on "
                        "the same windows, scored, never served)", ["model", "version", "tier", "role"])
MODEL_VERSION = Gauge("rtvol_gateway_model_version", "Version of the repository's policy by role "
                      "(serving: tier 2's, which tier 1's follows; shadow: 0 when none)", ["model", "role"],
                      multiprocess_mode="livemax")
MODEL_REFUSED = Counter("rtvol_gateway_model_refused_total", "Versions the gateway refused to follow "
                        "(digest check, missing, malformed policy, label_too_long)", ["model", "reason"])
SHADOW_DROPPED = Counter("rtvol_gateway_shadow_dropped_total",
                         "Tier-1 batches not sent to the shadow version, by reason (queue_full; "
                         "breaker: the sidecar's not closed; served_slow: the last served call used over "
                         "half its latency budget)", ["model", "version", "reason"])
SHADOW_ERRORS = Counter("rtvol_gateway_shadow_errors_total", "Failed shadow calls (they never touch the "
                        "breaker) and non-finite shadow rows", ["model", "version", "kind"])
SHARED_MIRRORED = Counter("rtvol_gateway_shared_mirrored_total",
                          "Signals another worker inferred, copied from the shared table into this "
                          "one's memory: all, to push to its Subscribe clients, else each when a "
                          "request asks for its stock")
SHARED_COALESCED = Counter("rtvol_gateway_shared_coalesced_total",
                           "Shared-table slots written more than once between two looks (their newest "
                           "signal only was mirrored and pushed)")
