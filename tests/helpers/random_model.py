"""A randomly initialised VolCNN (non-trivial weights) exported into a model repository: what
tests and `make gpu-bench` serve when no trained model is at hand. Kept apart from models.py
so that it needs no LightGBM (the GPU host's image has none)."""

from __future__ import annotations

from pathlib import Path

import torch

from rtvol.repository import write_version
from rtvol.training.cnn import VolCNN
from rtvol.training.export import SERVING, to_onnx

MODEL = "rtvol_cnn"


def export_random(repo: Path, seed: int, name: str = MODEL) -> int:
    """Write one more version of ``name`` under ``repo``; returns its version number."""
    torch.manual_seed(seed)
    model = VolCNN()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    return write_version(repo, name, to_onnx(model), {}, SERVING)
