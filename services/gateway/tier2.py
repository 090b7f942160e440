"""Tier 2: the same model version on ONNX Runtime CPU inside the gateway process."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from rtvol.repository import MODEL_FILE, verify, version_dir

OUTPUTS = ("rv", "direction", "momentum")
TIMED_WINDOWS, TIMED_RUNS = 64, 3  # what window_s times: a pipeline-sized batch, its fastest run


class LocalModel:
    def __init__(self, repo: Path, name: str, version: int | None, threads: int = 1) -> None:
        folder = version_dir(repo, name, version)
        self.name, self.version = name, folder.name  # the sidecar answers with the same label
        verify(repo, name, int(folder.name))  # the sidecar's rule: only files matching their digests
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(folder / MODEL_FILE), opts,
                                            providers=["CPUExecutionProvider"])

    def infer(self, windows: np.ndarray) -> dict[str, np.ndarray]:
        # ~40 µs at batch 1: cheaper to run on the event loop than to hop to a thread
        return dict(zip(OUTPUTS, self.session.run(list(OUTPUTS), {"window": windows}), strict=True))

    def window_s(self) -> float:
        """Seconds this host computes a window in here (a batch of TIMED_WINDOWS, the fastest of
        TIMED_RUNS, divided): what tier 1's per-window allowance is set against (tier1.py)."""
        x = np.zeros((TIMED_WINDOWS, *self.session.get_inputs()[0].shape[1:]), np.float32)
        self.infer(x)  # the first run also allocates: not timed
        fastest = float("inf")
        for _ in range(TIMED_RUNS):
            start = time.perf_counter()
            self.infer(x)
            fastest = min(fastest, time.perf_counter() - start)
        return fastest / TIMED_WINDOWS


def allowance_per_window_s(configured_s: float, factor: float, local: LocalModel
                           ) -> tuple[float, float | None]:
    """Tier 1's allowance a window (tier1.py) and tier 2's own time a window (None: not timed,
    ``factor`` 0): the configured allowance, raised to ``factor`` times tier 2's time on this
    host, so a tier-1 batch is slow when tier 2 would have answered it sooner, not because the
    host's CPU is slow."""
    if not factor:
        return configured_s, None
    tier2 = local.window_s()
    return max(configured_s, factor * tier2), tier2
