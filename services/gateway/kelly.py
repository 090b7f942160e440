"""Kelly sizing from a lookup table built once at start.

For a move that pays as much as it risks (even odds), Kelly's fraction is ``f = 2p - 1``
where ``p`` is the probability of being right. From the direction head:

* ``p = max(up, down) / (up + down)`` — the chance of the predicted side, given a move;
* ``c = 1 - flat`` — the confidence that there is a move at all;
* ``s = min(1, target_vol / rv)`` — volatility targeting: size down when the predicted
  realized volatility ``rv`` is above the target (``rv`` is taken at its bucket's centre);

    fraction = sign(up - down) * min(cap, c * (2p - 1) * s)

The table is indexed by (p bin, c bin, vol bucket), so a lookup is three index computations
and one array read: O(1), no formula at request time.
"""

from __future__ import annotations

import math

import numpy as np

P_BINS, C_BINS = 101, 51  # p in [0.5, 1], c in [0, 1]
VOL_EDGES = np.geomspace(1e-4, 1e-1, 31)  # 32 buckets: below, 30 between, above
_LOG_LO, _LOG_STEP = math.log(1e-4), math.log(1e-1 / 1e-4) / 30


class KellyTable:
    def __init__(self, cap: float = 0.25, target_vol: float = 0.003) -> None:
        self.cap, self.target_vol = cap, target_vol
        p = np.linspace(0.5, 1.0, P_BINS)
        c = np.linspace(0.0, 1.0, C_BINS)
        self.vol_centres = self._centres()
        scale = np.minimum(1.0, target_vol / self.vol_centres)
        raw = c[None, :, None] * (2 * p[:, None, None] - 1) * scale[None, None, :]
        self.table = np.minimum(cap, raw).astype(np.float64)

    @staticmethod
    def _centres() -> np.ndarray:
        inner = np.sqrt(VOL_EDGES[:-1] * VOL_EDGES[1:])
        return np.concatenate([[VOL_EDGES[0]], inner, [VOL_EDGES[-1]]])

    def fraction(self, down: float, flat: float, up: float, rv: float) -> float:
        moved = up + down
        if moved <= 0:
            return 0.0
        p = max(up, down) / moved
        i = min(P_BINS - 1, max(0, round((p - 0.5) * 2 * (P_BINS - 1))))
        j = min(C_BINS - 1, max(0, round((1.0 - flat) * (C_BINS - 1))))
        k = 0 if rv < VOL_EDGES[0] else min(31, 1 + int((math.log(rv) - _LOG_LO) / _LOG_STEP))
        value = float(self.table[i, j, k])
        return value if up >= down else -value
