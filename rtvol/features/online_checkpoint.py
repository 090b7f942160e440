"""A stock's whole online state as one fixed-size record: what a restart needs to go on exactly.

The feature service stores one record per stock next to its window (featurestore's
checkpoint keys) each time it writes the window, and restores them at start: the
high-water marks (sequence, event time) keep rejecting replays after a restart, the open
step's sums go on accumulating, and the ring is the window as written. Records of many
stocks are one numpy array, so export and restore are a handful of array operations.
"""

from __future__ import annotations

import numpy as np

from rtvol.features.online import OnlineState
from rtvol.features.spec import N_FEATURES, STEP_SECONDS, STEPS

VERSION = 1
RECORD = np.dtype([("version", "<u2"), ("has_close", "u1"), ("pad", "V5"), ("step", "<i8"), ("seq", "<i8"),
                   ("time", "<f8"), ("closed", "<i8"), ("acc", "<f8", 8), ("close", "<f8", 5),
                   ("log_wap", "<f8", 2), ("ring", "<f4", (STEPS, N_FEATURES))])


def export(state: OnlineState, idx: np.ndarray, windows: np.ndarray | None = None) -> np.ndarray:
    """Records of the stocks ``idx``; ``windows``: their ``state.windows(idx)`` when at hand."""
    out = np.zeros(len(idx), RECORD)
    out["version"] = VERSION
    for name in ("step", "seq", "time", "closed", "acc", "close", "log_wap", "has_close"):
        out[name] = getattr(state, name)[idx]
    out["ring"] = state.windows(idx) if windows is None else windows
    return out


def restore(state: OnlineState, idx: np.ndarray, records: np.ndarray) -> None:
    """Put ``records`` (as written by :func:`export`) back for the stocks ``idx``."""
    if len(records) and (records["version"] != VERSION).any():
        raise ValueError(f"online checkpoint: unknown version {sorted(set(records['version'].tolist()))}")
    for name in ("step", "seq", "time", "closed", "acc", "close", "log_wap"):
        getattr(state, name)[idx] = records[name]
    state.has_close[idx] = records["has_close"].astype(bool)
    state.ring[idx] = records["ring"]
    state.head[idx] = 0
    if len(records):
        state.clock = max(state.clock, float(np.nanmax(np.r_[records["time"], -np.inf])))
    state.host_written(idx)


def decode(values: list[bytes | None]) -> tuple[np.ndarray, np.ndarray]:
    """(found mask, records of the found ones) from stored values; a wrong length is an error."""
    present = [v for v in values if v is not None]
    if any(len(v) != RECORD.itemsize for v in present):
        raise ValueError("online checkpoint: unknown encoding (wrong length)")
    found = np.fromiter((v is not None for v in values), bool, len(values))
    return found, np.frombuffer(b"".join(present), RECORD)


def adopt_windows(state: OnlineState, idx: np.ndarray, windows: np.ndarray, seq: np.ndarray,
                  time_s: np.ndarray) -> None:
    """Stocks with a stored window but no checkpoint as new (a lost checkpoint write, or keys
    written before checkpoints existed): the window and its high-water marks are kept, so
    replays stay rejected; the open step starts empty."""
    state.ring[idx], state.head[idx] = windows, 0
    state.seq[idx], state.time[idx] = seq, time_s
    state.step[idx] = np.floor(time_s / STEP_SECONDS).astype(np.int64)
    state.closed[idx] = np.maximum(state.closed[idx], 1)
    state.acc[idx], state.close[idx], state.log_wap[idx], state.has_close[idx] = 0.0, 0.0, 0.0, False
    if len(idx):
        state.clock = max(state.clock, float(time_s.max()))
    state.host_written(idx)
