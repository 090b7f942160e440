"""Shadow batches are sliced on CPU backends only: a GPU backend (``on_gpu``) computes a
shadow batch whole, on a stream of its own, where slices would only add launches."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from rtvol.services.model.served import ServedWork
from rtvol.services.model.shadow import ShadowBatcher, ShadowPolicy


class Recording:
    """A backend that records each batch size it is asked for and echoes the row index."""

    def __init__(self, on_gpu: bool) -> None:
        self.name, self.on_gpu = "recording", on_gpu
        self.batches: list[int] = []

    def infer(self, window: np.ndarray) -> dict[str, np.ndarray]:
        self.batches.append(window.shape[0])
        return {"first": window[:, 0, 0].copy()}

    def warmup(self, buckets: object) -> None:
        pass


async def _shadow_batch(backend: Recording, rows: int) -> np.ndarray:
    batcher = ShadowBatcher("m", backend, (2, 3), 64, 0.0, None, yield_to=ServedWork(),
                            policy=ShadowPolicy(slice_rows=16))
    try:
        x = np.arange(rows * 6, dtype=np.float32).reshape(rows, 2, 3)
        return (await batcher.infer(x))["first"]
    finally:
        await batcher.close()


@pytest.mark.parametrize(("on_gpu", "batches"), [(False, [16, 16, 8]), (True, [40])], ids=["cpu", "gpu"])
def test_a_shadow_batch_is_sliced_on_the_cpu_only(on_gpu: bool, batches: list[int]) -> None:
    backend = Recording(on_gpu)
    first = asyncio.run(_shadow_batch(backend, 40))
    assert backend.batches == batches
    np.testing.assert_array_equal(first, np.arange(40, dtype=np.float32) * 6)  # every row, in order
