"""Models for tests: a randomly initialised VolCNN (non-trivial weights) exported into a model
repository, and a broken one. Nothing here needs the training libraries (LightGBM, SciPy), so the
backends' tests run where only the serving stack is installed (the GPU host's parity step);
the ensemble on the tiny data is helpers/ensembles.py."""

from __future__ import annotations

from pathlib import Path

import torch
from helpers.random_model import MODEL, export_random

from rtvol.repository import version_dir, write_version
from rtvol.services.model.backends import ModelFiles
from rtvol.training.cnn import OUTPUTS, VolCNN
from rtvol.training.export import SERVING, to_onnx

__all__ = ["MODEL", "export_non_finite", "export_random", "random_model_files"]


def random_model_files(repo: Path, seed: int, name: str, max_batch: int) -> ModelFiles:
    """A random VolCNN exported into ``repo``, as a backend sees it."""
    export_random(repo, seed=seed, name=name)
    return ModelFiles(version_dir(repo, name), "window", OUTPUTS, max_batch)


def export_non_finite(repo: Path, name: str = MODEL) -> int:
    """A version whose rv head answers NaN for every window (as a broken model would)."""
    torch.manual_seed(0)
    model = VolCNN()
    with torch.no_grad():
        model.rv_head.bias.fill_(float("nan"))
    return write_version(repo, name, to_onnx(model), {}, SERVING)
