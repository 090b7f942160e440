"""Inputs, the ONNX Runtime fp32 reference and the half-precision criterion that every
backend's parity test shares."""

from __future__ import annotations

import numpy as np

from rtvol.services.model import backends
from rtvol.services.model.backends import ModelFiles


def windows(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.lognormal(-6, 1, size=(n, 50, 12))).astype(np.float32)


def reference(files: ModelFiles, x: np.ndarray) -> dict[str, np.ndarray]:
    ort = backends.create("onnxruntime-cpu", files)
    return {k: v.copy() for k, v in ort.infer(x).items()}


def output_scale(files: ModelFiles) -> dict[str, float]:
    """Each output's RMS over a large batch."""
    return {k: float(np.sqrt(np.mean(v ** 2))) for k, v in reference(files, windows(256, 99)).items()}


def assert_half_close(got: np.ndarray, want: np.ndarray, scale: float, what: str) -> None:
    """Half precision: 1e-2 relative, element-wise, with the output's RMS as the floor of the
    scale: a dot product that cancels to ~0 (momentum) has no meaningful relative error of
    its own, but an error of 1 % of the output's typical size would show."""
    err = np.abs(got - want) / np.maximum(np.abs(want), scale)
    assert err.max() <= 1e-2, f"{what}: relative error {err.max():.3g} > 1e-2"
