"""THE feature definition: one place that says what every window column means.

A bucket is Optiver's 10-minute window (``seconds_in_bucket`` 0..599). It is cut into
``STEPS`` steps of ``STEP_SECONDS`` seconds; each step yields one row of ``N_FEATURES``
features, so one bucket gives a window of shape ``[STEPS, N_FEATURES]``.

Every feature is a function of per-step state that an online service can keep
incrementally (sums, counts and "last value seen"), so the streaming path (one update
at a time) and the offline path (whole datasets in numpy) compute identical numbers:

* Returns are WAP log returns between consecutive book snapshots of the *same bucket*.
  The first snapshot of a bucket has no return: buckets are normalised to price 1.0 at
  their start (Optiver's layout), so a return across buckets would be meaningless.
* "Close" features are the book state after the last snapshot at or before the step's
  end, carried forward within the bucket; before the bucket's first snapshot they are 0.
* Activity features (counts, volumes) are sums over the updates inside the step.

WAP1 = (bid1 * ask_size1 + ask1 * bid_size1) / (bid_size1 + ask_size1), likewise WAP2
from level 2: Optiver's definition. RV = sqrt(sum r^2).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

BUCKET_SECONDS = 600
STEPS = 50
STEP_SECONDS = BUCKET_SECONDS // STEPS  # 12
SPEC_VERSION = "rtvol-features/1"


@dataclass(frozen=True)
class Feature:
    name: str
    kind: str  # "sum" (over the step's updates), "close" (state at step end), "derived"
    transform: str  # how the model sees it: "log" (log(x + eps)) or "identity"
    doc: str


FEATURES: tuple[Feature, ...] = (
    Feature("wap1_rv", "sum", "log", "sqrt of the sum of squared WAP1 log returns in the step"),
    Feature("wap2_rv", "sum", "log", "sqrt of the sum of squared WAP2 log returns in the step"),
    Feature("wap1_return", "sum", "identity", "sum of WAP1 log returns in the step (net move)"),
    Feature("spread", "close", "log", "ask1 / bid1 - 1 at step close"),
    Feature("wap_balance", "close", "identity", "WAP1 / WAP2 - 1 at step close"),
    Feature(
        "depth_imbalance",
        "close",
        "identity",
        "(bid_size1 + bid_size2 - ask_size1 - ask_size2) / total size, at step close",
    ),
    Feature("log_book_size", "close", "identity", "log1p(total size of both levels) at close"),
    Feature("book_updates", "sum", "identity", "log1p(number of book snapshots in the step)"),
    Feature("trade_volume", "sum", "identity", "log1p(sum of traded size in the step)"),
    Feature("trade_count", "sum", "identity", "log1p(number of trade rows in the step)"),
    Feature("order_count", "sum", "identity", "log1p(sum of order_count in the step)"),
    Feature(
        "vwap_premium",
        "derived",
        "identity",
        "step VWAP of trades / mid at step close - 1; 0 when the step has no trade",
    ),
)
N_FEATURES = len(FEATURES)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
INDEX: dict[str, int] = {name: i for i, name in enumerate(FEATURE_NAMES)}
LOG_EPS = 1e-6  # added before log() so empty steps (RV 0) stay finite

# Direction classes; the band is in units of the next bucket's own RV: a move smaller
# than half a typical move is "flat".
DIRECTIONS: tuple[str, ...] = ("down", "flat", "up")
DIRECTION_BAND = 0.5


def spec_dict() -> dict[str, object]:
    return {
        "version": SPEC_VERSION,
        "bucket_seconds": BUCKET_SECONDS,
        "steps": STEPS,
        "features": [[f.name, f.kind, f.transform] for f in FEATURES],
        "log_eps": LOG_EPS,
        "direction_band": DIRECTION_BAND,
    }


def spec_hash() -> str:
    """Short stable hash of everything that changes what a window means."""
    canonical = json.dumps(spec_dict(), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).hexdigest()[:16]


def log_transformed() -> list[int]:
    return [i for i, f in enumerate(FEATURES) if f.transform == "log"]
