"""Live accuracy: every signal computed from a bucket's whole window is scored against the
realized volatility of the next bucket once the feature service's windows show it.

The model predicts the RV of the 600 s after its window (rtvol.features.targets: the target
bucket). A window ending at global step ``g`` (its steps are ``g-STEPS .. g-1``) is a whole
bucket when ``g % STEPS == 0``; its signal predicts bucket ``g // STEPS``. Every window the
gateway holds carries the per-step ``wap1_rv`` of its steps, closed and final, so the scorer
keeps the last ``HISTORY`` steps of each stock and, once all ``STEPS`` steps of a bucket are
known, computes its RV with the SAME code training uses for a bucket's RV
(rtvol.features.offline.rv_of_steps) and scores the signals waiting for it. Windows may skip
versions (the Watch stream coalesces steps): steps are stitched from consecutive windows, and
a bucket whose steps were never all seen is dropped and counted, not guessed.

Only counters leave this module, labelled by model, version, tier and role (``serving``; a
version run in ``shadow`` records with its own role): Prometheus sums them across gateway
replicas and computes live RMSPE over any range as
``sqrt(increase(squared_percentage_error) / increase(scored_signals))``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from prometheus_client import Counter, Gauge

from rtvol import repository
from rtvol.features.offline import rv_of_steps
from rtvol.features.spec import INDEX, STEPS
from rtvol.services.gateway.signal import Signal

ROLES = ("serving", "shadow")
HISTORY = 2 * STEPS  # steps kept per stock: a bucket waits while the next one closes
NONE_WAITING = 1 << 40  # a stock's oldest waiting bucket when none waits
LABELS = ("model", "version", "tier", "role")

SQUARED_ERROR = Counter(
    "rtvol_live_squared_percentage_error_total",
    "Sum over scored signals of ((realized - predicted) / realized)^2, realized = the next "
    "bucket's RV", LABELS)
SCORED = Counter("rtvol_live_scored_signals_total", "Signals scored against their bucket's realized RV",
                 LABELS)
UNSCORED = Counter(
    "rtvol_live_unscored_signals_total",
    "Signals not scored: mid_bucket (window not a whole bucket), horizon_missed (the bucket's "
    "steps were never all held), zero_realized (RV 0: percentage error undefined), non_finite",
    ["role", "reason"])
for _role in ROLES:  # every reason's series exists from the start, at 0
    for _reason in ("mid_bucket", "horizon_missed", "zero_realized", "non_finite"):
        UNSCORED.labels(_role, _reason)
VALIDATION_RMSPE = Gauge("rtvol_model_validation_rmspe",
                         "Validation RMSPE of a model version (its repository metadata)",
                         ["model", "version"])

Key = tuple[int, str, str, str, str]  # bucket, model, version, tier, role
ValidationLookup = Callable[[str, str], float | None]


class LiveScorer:
    """Per stock: recent closed steps' ``wap1_rv`` and the signals waiting for a bucket."""

    def __init__(self, stocks: int, validation: ValidationLookup | None = None) -> None:
        self.stocks = stocks
        self.validation = validation
        self.step_rv = np.zeros((stocks, HISTORY), np.float64)  # slot = global step % HISTORY
        self.known_from = np.zeros(stocks, np.int64)  # steps [known_from, known_to) are held
        self.known_to = np.zeros(stocks, np.int64)  # 0: nothing held yet
        self.waiting: list[dict[Key, float]] = [{} for _ in range(stocks)]
        # per stock, the oldest bucket waiting (NONE_WAITING: none; kept by _settle_stocks): a
        # newly held window visits only the stocks whose oldest bucket it can settle
        self.oldest = np.full(stocks, NONE_WAITING, np.int64)
        self._seen: set[tuple[str, str, str, str]] = set()  # labels whose counters exist

    def record(self, signals: Iterable[Signal], role: str = "serving") -> int:
        """Signals served (``role`` serving) or computed alongside (shadow) wait for their
        bucket's realized RV; one per bucket, model, version, tier and role (the first: a
        Predict and the pipeline may compute the same window). Returns how many now wait."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, not {role!r}")
        added, mid_bucket, non_finite = 0, 0, 0  # counted once a batch: most of a pipeline's are mid-bucket
        for sig in signals:
            if sig.error or not 0 <= sig.stock_id < self.stocks or sig.window_end_step <= 0:
                continue
            if sig.window_end_step % STEPS:
                mid_bucket += 1
                continue
            if not math.isfinite(sig.rv):
                non_finite += 1
                continue
            key = (sig.window_end_step // STEPS, sig.model, sig.version, str(sig.tier), role)
            waiting = self.waiting[sig.stock_id]
            if key not in waiting:
                waiting[key] = sig.rv
                added += 1
                self._first_seen(key[1:])
        for reason, n in (("mid_bucket", mid_bucket), ("non_finite", non_finite)):
            if n:
                UNSCORED.labels(role, reason).inc(n)
        if added:
            self._settle_stocks({sig.stock_id for sig in signals if 0 <= sig.stock_id < self.stocks})
        return added

    def settle(self, stock_ids: np.ndarray, windows: np.ndarray, end_steps: np.ndarray) -> int:
        """Newly held windows (``[n, STEPS, N_FEATURES]``, each ending before ``end_steps``)
        extend each stock's known steps; every waiting signal whose bucket is now known is
        scored. Returns how many were scored."""
        step_rv = windows[..., INDEX["wap1_rv"]].astype(np.float64)
        sids, ends = np.asarray(stock_ids, np.int64), np.asarray(end_steps, np.int64)
        if (np.diff(sids) > 0).all():  # a Watch batch (ids ascending, each once): all at once
            extended = self._extend(sids, step_rv, ends)
        else:  # repeated or unordered ids: one window at a time, in order
            extended = np.unique(np.concatenate(
                [np.zeros(0, np.int64), *(self._extend(sids[i:i + 1], step_rv[i:i + 1], ends[i:i + 1])
                                          for i in range(len(sids)))]))
        # a stock whose oldest waiting bucket cannot settle has none that can
        oldest = self.oldest[extended]
        due = (oldest * STEPS < self.known_from[extended]) | ((oldest + 1) * STEPS <= self.known_to[extended])
        return self._settle_stocks(extended[due].tolist())

    def _extend(self, sids: np.ndarray, step_rv: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """The known steps of distinct stocks extended by their windows, as array operations
        (on the Watch stream's path to the pipeline); returns the stocks extended."""
        ok = (sids >= 0) & (sids < self.stocks) & (ends >= STEPS)
        ok[ok] = ends[ok] > self.known_to[sids[ok]]
        sids, step_rv, ends = sids[ok], step_rv[ok], ends[ok]
        gap = self.known_to[sids] < ends - STEPS  # what came before cannot be stitched
        self.known_from[sids[gap]] = ends[gap] - STEPS
        self.known_to[sids] = ends
        self.known_from[sids] = np.maximum(self.known_from[sids], ends - HISTORY)
        self.step_rv[sids[:, None], (ends[:, None] - STEPS + np.arange(STEPS)) % HISTORY] = step_rv
        return sids

    def _settle_stocks(self, stock_ids: Iterable[int]) -> int:
        scored = 0
        for sid in stock_ids:
            waiting = self.waiting[sid]
            lo, hi = int(self.known_from[sid]), int(self.known_to[sid])
            for key in [k for k in waiting if k[0] * STEPS < lo or (k[0] + 1) * STEPS <= hi]:
                predicted = waiting.pop(key)
                bucket, model, version, tier, role = key
                if bucket * STEPS < lo:
                    UNSCORED.labels(role, "horizon_missed").inc()
                    continue
                steps = np.arange(bucket * STEPS, (bucket + 1) * STEPS) % HISTORY
                realized = float(rv_of_steps(self.step_rv[sid, steps]))
                if not realized > 0:
                    UNSCORED.labels(role, "zero_realized").inc()
                    continue
                SQUARED_ERROR.labels(model, version, tier, role).inc(((realized - predicted) / realized) ** 2)
                SCORED.labels(model, version, tier, role).inc()
                scored += 1
            self.oldest[sid] = min((k[0] for k in waiting), default=NONE_WAITING)
        return scored

    def _first_seen(self, labels: tuple[str, str, str, str]) -> None:
        """A model, version, tier and role's first waiting signal: its counters start at 0 (so
        Prometheus sees the first scores as an increase) and its validation RMSPE is exported."""
        if labels in self._seen:
            return
        new_version = all(seen[:2] != labels[:2] for seen in self._seen)
        self._seen.add(labels)
        SQUARED_ERROR.labels(*labels)
        SCORED.labels(*labels)
        model, version, _, _ = labels
        if not new_version or self.validation is None:
            return
        if (rmspe := self.validation(model, version)) is not None:
            VALIDATION_RMSPE.labels(model, version).set(rmspe)


def repository_validation(repo: Path) -> ValidationLookup:
    """Validation RMSPE of a served version, read from the model repository's metadata."""
    def lookup(model: str, version: str) -> float | None:
        return repository.validation_rmspe(repo, model, int(version)) if version.isdigit() else None
    return lookup
