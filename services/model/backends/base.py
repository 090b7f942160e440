"""The one small interface every backend implements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np


class BackendUnavailable(RuntimeError):
    """This backend cannot run on this machine (no GPU, package missing, no engine file)."""


@dataclass(frozen=True)
class ModelFiles:
    """Where a version's artifacts live and what the model serves."""

    version_dir: Path
    input_name: str
    output_names: tuple[str, ...]
    max_batch_size: int

    @property
    def onnx(self) -> Path:
        return self.version_dir / "model.onnx"


class Backend(Protocol):
    name: str

    # Optional (read with getattr): a [max_batch_size, ...] float32 array that ``infer``
    # reads from without a copy when its ``window`` is a leading slice of it (a GPU backend's
    # pinned input buffer); the batcher concatenates a batch of requests straight into it.
    # Optional ``on_gpu`` (read with getattr, default False): true when ``infer`` computes on
    # a GPU stream of its own, not on the CPU's cores (shadow.py slices CPU backends only).

    def infer(self, window: np.ndarray) -> dict[str, np.ndarray]:
        """``window`` is C-contiguous float32 [n, ...] with 1 <= n <= max_batch_size.

        The returned arrays stay valid until the next ``infer`` call only (GPU backends hand
        out views of static buffers); callers copy what they keep."""
        ...

    def warmup(self, buckets: Sequence[int]) -> None:
        """Run every batch bucket once (and capture graphs) before the model is ready."""
        ...


def batch_buckets(max_batch_size: int) -> tuple[int, ...]:
    """Powers of two up to max_batch_size, plus max_batch_size itself."""
    sizes = {1 << i for i in range(max_batch_size.bit_length()) if 1 << i <= max_batch_size}
    return tuple(sorted(sizes | {max_batch_size}))
