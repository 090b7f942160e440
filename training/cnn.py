"""The multi-task 1D-CNN: window [B, STEPS, N_FEATURES] -> RV, direction, momentum.

Normalisation (log transform of heavy-tailed columns, then standardisation with
statistics from the training split) is part of the graph, so every serving tier feeds
raw feature windows. The RV head predicts a log correction to the bucket's own RV
(recomputed in the graph from the wap1_rv column), which keeps it positive.

Beside the convolutional path, a "wide" path hands the dense layers the realized
volatility over the bucket's tails (HAR's horizons, in log ratios to the whole bucket):
variances add across steps, which log-scaled step inputs make hard for convolutions.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from rtvol.features.aggregates import RV_TAILS
from rtvol.features.spec import INDEX, LOG_EPS, N_FEATURES, STEPS, log_transformed

OUTPUTS = ("rv", "direction", "momentum")
INPUT = "window"


class CausalConv(nn.Module):
    """Conv1d padded on the left only (explicit padding: ONNX Runtime rejects "same" with
    dilation), so position t sees steps <= t and the last position summarises the end."""

    def __init__(self, c_in: int, c_out: int, dilation: int, kernel: int = 3) -> None:
        super().__init__()
        self.pad = (kernel - 1) * dilation
        self.conv = nn.Conv1d(c_in, c_out, kernel, dilation=dilation)
        self.norm = nn.BatchNorm1d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(F.pad(x, (self.pad, 0)))))


class VolCNN(nn.Module):
    mean: torch.Tensor
    std: torch.Tensor
    log_mask: torch.Tensor

    def __init__(self, channels: tuple[int, ...] = (32, 64, 32),
                 dilations: tuple[int, ...] = (1, 2, 4), hidden: tuple[int, int] = (64, 32)) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(N_FEATURES))
        self.register_buffer("std", torch.ones(N_FEATURES))
        log_mask = torch.zeros(N_FEATURES, dtype=torch.bool)
        log_mask[log_transformed()] = True
        self.register_buffer("log_mask", log_mask)
        layers, c_in = [], N_FEATURES
        for c, d in zip(channels, dilations, strict=True):
            layers.append(CausalConv(c_in, c, d))
            c_in = c
        self.convs = nn.Sequential(*layers)
        self.tails = [first for _, first in RV_TAILS[1:]]
        wide = len(self.tails) + 1
        self.dense = nn.Sequential(nn.Linear(3 * c_in + wide, hidden[0]), nn.ReLU(),
                                   nn.Linear(hidden[0], hidden[1]), nn.ReLU())
        self.rv_head = nn.Linear(hidden[1], 1)
        self.direction_head = nn.Linear(hidden[1], 3)
        self.momentum_head = nn.Linear(hidden[1], 1)

    def transform(self, window: torch.Tensor) -> torch.Tensor:
        x = torch.where(self.log_mask, torch.log(window.clamp_min(0) + LOG_EPS), window)
        return (x - self.mean) / self.std

    def set_normalisation(self, windows: np.ndarray) -> None:
        with torch.no_grad():
            x = self.transform(torch.from_numpy(windows[:4096]).float())  # identity stats yet
            self.mean.copy_(x.mean(dim=(0, 1)))
            self.std.copy_(x.std(dim=(0, 1)).clamp_min(1e-6))

    def logits(self, window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log RV, direction logits, pre-tanh momentum); used by training losses."""
        h = self.convs(self.transform(window).transpose(1, 2))
        rv = window[:, :, INDEX["wap1_rv"]].float()
        variance = rv * rv
        log_naive = 0.5 * torch.log(variance.sum(dim=1, keepdim=True) + LOG_EPS**2)
        # tail RV scaled to a whole bucket, relative to the bucket's RV (scale-free)
        tails = [0.5 * torch.log(variance[:, first:].mean(dim=1, keepdim=True) * STEPS + LOG_EPS**2)
                 - log_naive for first in self.tails]
        level = (log_naive - self.mean[INDEX["wap1_rv"]]) / self.std[INDEX["wap1_rv"]]
        z = self.dense(torch.cat([h.amax(dim=2), h.mean(dim=2), h[:, :, -1], *tails, level], dim=1))
        return log_naive + self.rv_head(z), self.direction_head(z), self.momentum_head(z)

    def forward(self, window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        log_rv, direction, momentum = self.logits(window)
        return torch.exp(log_rv), torch.softmax(direction, dim=1), torch.tanh(momentum)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def example_input(batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, STEPS, N_FEATURES) * 1e-3
