"""Tier 1 in the gateway's own process (`rtvol serve embedded ... --model [MODEL FLAGS]`): the
sidecar's models (the same backends, batchers and compute thread: services/model/main.py's
``Models``) called without the gRPC hop, behind the same breaker, timeout and tiers as a
sidecar (services/gateway/tier1.py). It removes the hop to the sidecar and back, but measured
slower on the H200 (docs/BENCHMARKS.md, "In one process"): the compute thread waits for the GIL
the loop's Python holds (0.44 -> ~4 ms a call), so it is an option, not a default. It also
gives up a process of its own for the GPU (a crash of one takes both) and shadow versions."""

from __future__ import annotations

import time

import numpy as np

from rtvol.services.gateway.sidecar_client import Answer
from rtvol.services.model.main import Models


class InProcessModel:
    def __init__(self, models: Models, model: str) -> None:
        self.models, self.model = models, model

    async def infer(self, windows: np.ndarray, version: str = "") -> Answer:
        """``version``: that one, else the one served; the time reported is the call's own (from
        the batcher's queue to its answer), as a sidecar reports decode to encode."""
        start = time.perf_counter()
        loaded, batcher = self.models.registry.get(self.model, version)
        outputs = await batcher.infer(np.ascontiguousarray(windows, np.float32))
        return Answer(outputs, loaded.version_label, time.perf_counter() - start)

    async def ready(self, timeout_s: float) -> str:
        """'' once the model is loaded and warm, else why not (the gateway's probe)."""
        return "" if self.model in self.models.registry.served else f"{self.model} not loaded in this process"

    async def close(self) -> None:
        """Nothing: the models are closed by whoever made them, after the gateway has stopped."""
