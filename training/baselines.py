"""Baselines: naive (current-bucket RV), HAR-style linear model, LightGBM on aggregates."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np

from rtvol.features.aggregates import AGGREGATE_NAMES, RV_TAILS, aggregates, tail_rv
from rtvol.features.offline import bucket_rv

RV_FLOOR = 1e-8  # keeps log() finite for a bucket without a single return
# where a model version keeps its baselines (relative to the version directory)
HAR_FILE = "baselines/har.json"
LIGHTGBM_FILE = "baselines/lightgbm.txt"


def rmspe(y: np.ndarray, pred: np.ndarray) -> float:
    """Root mean squared percentage error, Optiver's score."""
    y = np.asarray(y, np.float64)
    return float(np.sqrt(np.mean(((y - np.asarray(pred, np.float64)) / y) ** 2)))


def naive(windows: np.ndarray) -> np.ndarray:
    return bucket_rv(windows)


def _har_design(windows: np.ndarray) -> np.ndarray:
    tails = [np.log(np.maximum(tail_rv(windows, first), RV_FLOOR)) for _, first in RV_TAILS]
    return np.column_stack([np.ones(len(windows)), *tails])


@dataclass
class Har:
    """log RV_next = a + sum_k b_k log RV_k over tails of the bucket (HAR's horizons, in
    minutes instead of days), fitted by least squares weighted towards relative error."""

    coef: np.ndarray

    @classmethod
    def fit(cls, windows: np.ndarray, y: np.ndarray) -> Har:
        x = _har_design(windows)
        coef, *_ = np.linalg.lstsq(x, np.log(y), rcond=None)
        # one multiplicative correction: exp(E[log]) is biased low for a mean of y
        pred = np.exp(x @ coef)
        scale = np.sum(pred / y) / np.sum((pred / y) ** 2)  # minimises RMSPE over a scale
        coef[0] += np.log(scale)
        return cls(coef)

    def predict(self, windows: np.ndarray) -> np.ndarray:
        return np.exp(_har_design(windows) @ self.coef)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"coef": self.coef.tolist()}))

    @classmethod
    def load(cls, path: Path) -> Har:
        return cls(np.array(json.loads(path.read_text())["coef"]))


LGBM_PARAMS = {
    "objective": "rmse", "learning_rate": 0.05, "num_leaves": 63, "min_data_in_leaf": 50,
    "feature_fraction": 0.8, "bagging_fraction": 0.8, "bagging_freq": 1, "lambda_l2": 1.0,
    "verbosity": -1, "num_threads": 2, "seed": 0, "deterministic": True,
    "force_row_wise": True,
}


class GradientBoosting:
    """LightGBM on the window aggregates; weights 1/y^2 make its squared error RMSPE."""

    def __init__(self, booster: lgb.Booster) -> None:
        self.booster = booster

    @classmethod
    def fit(cls, train_windows: np.ndarray, y: np.ndarray, val_windows: np.ndarray,
            y_val: np.ndarray, rounds: int = 2000) -> GradientBoosting:
        def data(w: np.ndarray, t: np.ndarray, ref: lgb.Dataset | None = None) -> lgb.Dataset:
            return lgb.Dataset(aggregates(w), label=t, weight=1.0 / t**2,
                               feature_name=list(AGGREGATE_NAMES), reference=ref)

        train = data(train_windows, y)
        booster = lgb.train(LGBM_PARAMS, train, num_boost_round=rounds,
                            valid_sets=[data(val_windows, y_val, train)],
                            callbacks=[lgb.early_stopping(100, verbose=False)])
        return cls(booster)

    def predict(self, windows: np.ndarray) -> np.ndarray:
        best = self.booster.best_iteration or None
        pred = self.booster.predict(aggregates(windows), num_iteration=best)
        return np.maximum(np.asarray(pred), RV_FLOOR)

    def save(self, path: Path) -> None:
        self.booster.save_model(str(path))

    @classmethod
    def load(cls, path: Path) -> GradientBoosting:
        return cls(lgb.Booster(model_file=str(path)))


def load(version_dir: Path) -> tuple[Har, GradientBoosting]:
    """The baselines saved beside a model version."""
    return Har.load(version_dir / HAR_FILE), GradientBoosting.load(version_dir / LIGHTGBM_FILE)
