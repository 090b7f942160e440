"""Bootstrap confidence intervals for RMSPE, resampling whole time_ids.

Buckets of one time_id share the market's hidden state (one volatility regime across
stocks), so their errors are correlated: resampling rows would pretend there are
``stocks`` times more independent draws than there are and make the intervals too narrow.
Each bootstrap draw picks time_ids with replacement and recomputes every model's RMSPE on
the same draw, so a paired difference keeps the correlation between the models' errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_DRAWS = 2000
DEFAULT_LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    estimate: float  # on the full sample
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high}

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def draws(time_id: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(weights [n, groups]: how often each time_id is picked per draw, group of each row)."""
    groups, inverse = np.unique(time_id, return_inverse=True)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(groups), size=(n, len(groups)))
    weights = np.zeros((n, len(groups)))
    np.add.at(weights, (np.arange(n)[:, None], picks), 1.0)
    return weights, inverse


def _rmspe_per_draw(target: np.ndarray, pred: np.ndarray, weights: np.ndarray,
                    inverse: np.ndarray) -> tuple[float, np.ndarray]:
    sq = ((np.asarray(target, np.float64) - np.asarray(pred, np.float64)) / target) ** 2
    groups = weights.shape[1]
    sums = np.bincount(inverse, weights=sq, minlength=groups)
    counts = np.bincount(inverse, minlength=groups).astype(np.float64)
    return float(np.sqrt(sums.sum() / counts.sum())), np.sqrt(weights @ sums / (weights @ counts))


def _interval(estimate: float, samples: np.ndarray, level: float) -> Interval:
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return Interval(estimate, float(low), float(high))


def bootstrap(target: np.ndarray, preds: dict[str, np.ndarray], time_id: np.ndarray,
              pairs: list[tuple[str, str]], n: int = DEFAULT_DRAWS,
              level: float = DEFAULT_LEVEL, seed: int = 0) -> dict[str, Any]:
    """Percentile intervals of each model's RMSPE and of ``a - b`` for each pair."""
    if n < 10:
        raise ValueError(f"bootstrap draws must be >= 10, got {n}")
    if not 0 < level < 1:
        raise ValueError(f"confidence level must be in (0, 1), got {level}")
    weights, inverse = draws(time_id, n, seed)
    full, per_draw = {}, {}
    for name, pred in preds.items():
        full[name], per_draw[name] = _rmspe_per_draw(target, pred, weights, inverse)
    return {
        "draws": n, "level": level, "seed": seed, "time_ids": int(weights.shape[1]),
        "rmspe": {k: _interval(full[k], per_draw[k], level).as_dict() for k in preds},
        "difference": {f"{a} - {b}": _interval(full[a] - full[b], per_draw[a] - per_draw[b],
                                               level).as_dict() for a, b in pairs},
    }


def across_seeds(values: list[float], level: float = DEFAULT_LEVEL) -> dict[str, float]:
    """Mean, sample sd and a Student-t interval for the mean over (at least two) seeds."""
    from scipy import stats

    x = np.asarray(values, np.float64)
    if len(x) < 2:
        raise ValueError("an across-seed interval needs at least two seeds")
    mean, sd = float(x.mean()), float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, len(x) - 1) * sd / np.sqrt(len(x)))
    return {"mean": mean, "sd": sd, "low": mean - half, "high": mean + half,
            "min": float(x.min()), "max": float(x.max()), "seeds": len(x)}
