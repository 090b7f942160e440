"""An ensemble on the tiny data whose trees have real depth (needs the training libraries)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np
from helpers.random_model import MODEL

from rtvol.features.aggregates import aggregates
from rtvol.repository import MODEL_FILE, version_dir
from rtvol.training import baselines, dataset, ensemble, export, mlp, train


@dataclass(frozen=True)
class TinyEnsemble:
    onnx: bytes  # the served graph
    windows: np.ndarray  # every window of the tiny data
    rv: np.ndarray  # the python ensemble's rv for them
    cnn: dict[str, np.ndarray]  # the CNN's outputs (direction and momentum pass through)


def tiny_ensemble(tiny_data: Path, tiny_repo: Path) -> TinyEnsemble:
    """The tiny repository's CNN, MLP and HAR with a LightGBM that has real depth (on the
    tiny data the production parameters grow no more than a stump), fixed weights on all
    four."""
    vdir = version_dir(tiny_repo, MODEL)
    cnn_onnx = (vdir / MODEL_FILE).read_bytes()
    har, _ = baselines.load(vdir)
    net = mlp.load(vdir)
    assert net is not None
    data = dataset.load(tiny_data, progress=False)
    tr = train.split(data, train.TrainConfig())["train"]
    params = {**baselines.LGBM_PARAMS, "num_leaves": 15, "min_data_in_leaf": 5, "num_threads": 1}
    gbm = baselines.GradientBoosting(lgb.train(
        params, lgb.Dataset(aggregates(tr.windows), label=tr.target), num_boost_round=25))
    weights = {"cnn": 0.3, "lightgbm": 0.3, "mlp": 0.25, "har": 0.15}
    cnn = export.run(cnn_onnx, data.windows)
    preds = {"cnn": cnn["rv"][:, 0], "lightgbm": gbm.predict(data.windows),
             "mlp": net.predict(data.windows), "har": har.predict(data.windows)}
    return TinyEnsemble(ensemble.build(cnn_onnx, gbm, har, weights, net), data.windows,
                        ensemble.combine(weights, preds), cnn)
