"""Shadow versions in the sidecar compute in slices and yield to served work.

A shadow batch runs on a thread of its own (never queued ahead of a served batch), but on a
CPU host it shares the cores with whatever served batch arrives while it computes: a shadow
batch of hundreds of windows took milliseconds, long enough to push served calls over the
gateway's latency budget. So a shadow batch is computed ``slice_rows`` windows at a time;
before each slice it checks for served work (a served request queued or computing, counted
by ``ServedWork``) and, while there is some, pauses (counted). A served request shares the
cores with at most the one slice already running, never with the rest of the shadow batch.
A pause longer than ``max_pause_s`` drops the rest of the shadow batch (counted): its callers
get UNAVAILABLE, and the gateway counts a shadow error; served signals never depend on it.

Only a backend on the CPU is sliced: on a GPU (a backend whose ``on_gpu`` is true) the shadow
computes on a stream of its own and shares no cores with served work, so slices would only add
launches.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import numpy as np

from rtvol.errors import Unavailable
from rtvol.services.model import metrics
from rtvol.services.model.batcher import Batcher
from rtvol.services.model.served import ServedWork


@dataclass(frozen=True)
class ShadowPolicy:
    slice_rows: int = 16  # 0: a shadow batch is computed whole, without yielding
    max_pause_s: float = 0.25


class ShadowBatcher(Batcher):
    lone_inline = False  # every batch goes through the sliced _run_backend below

    def __init__(self, *args: Any, yield_to: ServedWork, policy: ShadowPolicy, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.yield_to, self.policy = yield_to, policy
        self._paused = metrics.SHADOW_PAUSED.labels(self.model)
        self._dropped = metrics.SHADOW_DROPPED.labels(self.model)

    async def _run_backend(self, x: np.ndarray) -> dict[str, np.ndarray]:
        step = self.policy.slice_rows
        if not step or getattr(self.backend, "on_gpu", False):
            return await super()._run_backend(x)
        parts = []
        for start in range(0, x.shape[0], step):
            await self._wait_for_served(x.shape[0] - start)
            outs = await super()._run_backend(x[start:start + step])
            parts.append({k: v.copy() for k, v in outs.items()})  # valid until the next slice only
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    async def _wait_for_served(self, rows_left: int) -> None:
        """Return once no served request is waiting; raise Unavailable (the rest is dropped)
        when served work lasts longer than the pause allowed."""
        await asyncio.sleep(0)  # a slice computed on the loop: served requests read meanwhile queue now
        if not self.yield_to.waiting:
            return
        self._paused.inc()
        try:
            async with asyncio.timeout(self.policy.max_pause_s):
                await self.yield_to.idle.wait()
        except TimeoutError:
            self._dropped.inc(rows_left)
            raise Unavailable(f"model '{self.model}': shadow batch dropped, served work kept the "
                              f"sidecar busy for over {self.policy.max_pause_s * 1e3:g} ms") from None
