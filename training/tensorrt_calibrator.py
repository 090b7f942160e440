"""IInt8EntropyCalibrator2 over real feature windows (imported only where tensorrt is)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


def make_calibrator(trt: Any, batches: Iterator[np.ndarray], batch_size: int, cache: Path) -> Any:
    """A calibrator that feeds ``batches`` through one device buffer; the cache file lets a
    rebuild skip calibration."""
    import torch

    class WindowCalibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc,unused-ignore]  # untyped
        def __init__(self) -> None:
            super().__init__()
            self.device: torch.Tensor | None = None

        def get_batch_size(self) -> int:
            return batch_size

        def get_batch(self, names: list[str]) -> list[int] | None:
            batch = next(batches, None)
            if batch is None:
                return None
            self.device = torch.from_numpy(batch).to("cuda")  # kept alive until the next call
            return [int(self.device.data_ptr())]

        def read_calibration_cache(self) -> bytes | None:
            return cache.read_bytes() if cache.is_file() else None

        def write_calibration_cache(self, data: Any) -> None:
            cache.write_bytes(bytes(data))

    return WindowCalibrator()
