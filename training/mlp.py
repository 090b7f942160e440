"""The MLP member: a bucket's aggregates (rtvol.features.aggregates, what LightGBM sees)
-> next-bucket RV.

A third member of another kind than the other two: smooth in its inputs where the trees
are piecewise constant, and blind to the step-by-step shape the CNN reads. The Optiver
solutions ensembled trees, a 1D-CNN and an MLP.

Inputs: the aggregates, the RV-like ones (positive, heavy-tailed) as logs, standardised
with the training part's statistics. Like the CNN's RV head, the output is a log
correction to the bucket's own RV (log rv_full), which keeps it positive and leaves the
network only the correction to learn. Trained with the CNN's loss (RMSPE^2) and
early-stopped on the stop part (training.fitting).

The trained member is numpy (``Mlp``): its ``predict`` is the reference the ensemble's
ONNX graph is checked against, and its arrays are what the graph's Gemm nodes hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from rtvol.features.aggregates import AGGREGATE_NAMES, RV_TAILS, aggregates
from rtvol.training import baselines, fitting
from rtvol.training.dataset import Dataset

if TYPE_CHECKING:  # train imports this module
    from rtvol.training.train import TrainConfig

MLP_FILE = "baselines/mlp.npz"  # beside the other members, relative to the version directory
HIDDEN = (64, 32)
LOGGED = (*(name for name, _ in RV_TAILS), "rv2_full", "max_step_rv")
LOG_COLUMNS = np.array([AGGREGATE_NAMES.index(n) for n in LOGGED])
BASE = AGGREGATE_NAMES.index("rv_full")  # the output corrects log of this column


def inputs(agg: np.ndarray) -> np.ndarray:
    """aggregates(windows) -> the network's inputs (before standardisation), float64."""
    x = np.array(agg, np.float64)
    x[:, LOG_COLUMNS] = np.log(np.maximum(x[:, LOG_COLUMNS], baselines.RV_FLOOR))
    return x


class AggregateNet(nn.Module):
    """The torch network that is trained; ``Mlp`` holds its weights once trained."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, n_inputs: int = len(AGGREGATE_NAMES), hidden: tuple[int, ...] = HIDDEN
                 ) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_inputs))
        self.register_buffer("std", torch.ones(n_inputs))
        layers: list[nn.Module] = []
        width = n_inputs
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.net = nn.Sequential(*layers, nn.Linear(width, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs [n, features] -> log RV [n]."""
        return x[:, BASE] + self.net((x - self.mean) / self.std).squeeze(1)


@dataclass(frozen=True)
class Mlp:
    """The trained member: standardisation and the dense layers' weights, float64."""

    mean: np.ndarray  # [features]
    std: np.ndarray  # [features]
    weights: tuple[np.ndarray, ...]  # [out, in] per layer, as torch's Linear holds them
    biases: tuple[np.ndarray, ...]  # [out] per layer

    @classmethod
    def from_net(cls, net: AggregateNet) -> Mlp:
        linears = [m for m in net.net if isinstance(m, nn.Linear)]

        def array(t: torch.Tensor) -> np.ndarray:
            return t.detach().cpu().double().numpy()

        return cls(array(net.mean), array(net.std), tuple(array(m.weight) for m in linears),
                   tuple(array(m.bias) for m in linears))

    def log_predict(self, x: np.ndarray) -> np.ndarray:
        """Inputs (``inputs(aggregates)``) -> log RV."""
        h = (x - self.mean) / self.std
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = h @ w.T + b
            if i < len(self.weights) - 1:
                h = np.maximum(h, 0.0)
        return x[:, BASE] + h[:, 0]

    def predict(self, windows: np.ndarray) -> np.ndarray:
        return np.exp(self.log_predict(inputs(aggregates(windows))))

    def save(self, path: Path) -> None:
        arrays: dict[str, Any] = {"mean": self.mean, "std": self.std,
                  **{f"weight{i}": w for i, w in enumerate(self.weights)},
                  **{f"bias{i}": b for i, b in enumerate(self.biases)}}
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:  # a file object: np.savez would append .npz to a name
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path: Path) -> Mlp:
        with np.load(path) as f:
            layers = sum(k.startswith("weight") for k in f.files)
            return cls(f["mean"], f["std"], tuple(f[f"weight{i}"] for i in range(layers)),
                       tuple(f[f"bias{i}"] for i in range(layers)))


def load(version_dir: Path) -> Mlp | None:
    """The MLP saved beside a model version; None for a version trained before it existed."""
    path = version_dir / MLP_FILE
    return Mlp.load(path) if path.is_file() else None


def train(train_part: Dataset, stop: Dataset, cfg: TrainConfig, progress: bool = True
          ) -> tuple[Mlp, list[dict[str, float]]]:
    """Fit on ``train_part``, keep the epoch with the best RMSPE on ``stop``."""
    torch.manual_seed(cfg.seed)
    x = torch.from_numpy(inputs(aggregates(train_part.windows))).float()
    y = torch.from_numpy(train_part.target.astype(np.float32))
    x_stop = torch.from_numpy(inputs(aggregates(stop.windows))).float()
    net = AggregateNet(x.shape[1])
    net.mean.copy_(x.mean(dim=0))
    net.std.copy_(x.std(dim=0).clamp_min(1e-6))

    def score() -> float:
        with torch.no_grad():
            return baselines.rmspe(stop.target, torch.exp(net(x_stop)).numpy())

    history = fitting.early_stopping(
        net, len(y), lambda idx: fitting.rmspe_squared(y[idx], net(x[idx])), score, cfg,
        torch.device("cpu"), "mlp", progress)
    return Mlp.from_net(net), history
