"""The three prediction targets, defined once for the generator, training and evaluation.

For a bucket's *next* 10 minutes with WAP1 log returns r_1..r_n:
  rv        = sqrt(sum r_i^2)                     (Optiver's target)
  z         = sum r_i / rv                        (the next bucket's move in units of its RV)
  direction = down if z < -band, up if z > band, else flat   (band = DIRECTION_BAND)
  momentum  = tanh(z)
"""

from __future__ import annotations

import numpy as np

from rtvol.features.spec import DIRECTION_BAND


def move_score(net_return: np.ndarray, rv: np.ndarray) -> np.ndarray:
    rv = np.asarray(rv, np.float64)
    return np.divide(net_return, rv, out=np.zeros_like(rv), where=rv > 0)


def direction_class(z: np.ndarray) -> np.ndarray:
    """0 = down, 1 = flat, 2 = up (the order of spec.DIRECTIONS)."""
    return np.where(z < -DIRECTION_BAND, 0, np.where(z > DIRECTION_BAND, 2, 1)).astype(np.int64)


def momentum(z: np.ndarray) -> np.ndarray:
    return np.tanh(z)
