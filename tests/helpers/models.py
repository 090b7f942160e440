"""Models for tests: a randomly initialised VolCNN (non-trivial weights) exported into a model
repository; an ensemble on the tiny data whose trees have real depth."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np
import torch
from helpers.random_model import MODEL, export_random

from rtvol.features.aggregates import aggregates
from rtvol.repository import MODEL_FILE, version_dir, write_version
from rtvol.services.model.backends import ModelFiles
from rtvol.training import baselines, dataset, ensemble, export, mlp, train
from rtvol.training.cnn import OUTPUTS, VolCNN
from rtvol.training.export import SERVING, to_onnx

__all__ = ["MODEL", "export_random", "random_model_files", "tiny_ensemble"]


def random_model_files(repo: Path, seed: int, name: str, max_batch: int) -> ModelFiles:
    """A random VolCNN exported into ``repo``, as a backend sees it."""
    export_random(repo, seed=seed, name=name)
    return ModelFiles(version_dir(repo, name), "window", OUTPUTS, max_batch)


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


def export_non_finite(repo: Path, name: str = MODEL) -> int:
    """A version whose rv head answers NaN for every window (as a broken model would)."""
    torch.manual_seed(0)
    model = VolCNN()
    with torch.no_grad():
        model.rv_head.bias.fill_(float("nan"))
    return write_version(repo, name, to_onnx(model), {}, SERVING)
