"""Windows sent as their newest steps: the Watch stream's compact form.

A stock's window is its last STEPS closed steps, oldest first, and its version counts the
steps closed so far; closing k more steps drops the k oldest rows and appends k new ones. So
a watcher that holds version h of a window needs only the newest v - h rows of version v:
48 bytes for one step instead of the whole 2,400-byte window (at 200,000 updates/s over
8,000 stocks the whole windows were ~160 MB/s into every gateway worker). The feature service
sends each window's rows since the version it last pushed to every watcher (a new watcher's
snapshot is whole windows, never older than that); a watcher that asked for rows
(``METADATA``) shifts them in. One that holds an older version than the rows start from
cannot: ``apply`` refuses the whole batch (the stream is then restarted, and its snapshot
is whole)."""

from __future__ import annotations

import numpy as np

from rtvol.features.spec import N_FEATURES, STEPS

# Watch call metadata: this watcher takes windows as their newest rows (WindowBatch.rows).
METADATA = ("rtvol-window-rows", "1")


class RowsGap(Exception):
    """Rows that start after the version held: the window cannot be rebuilt from them."""


def newest_steps(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For the newest ``rows[i]`` rows of each of ``len(rows)`` windows, concatenated: each
    row's window (0-based) and its step in that window."""
    rows = np.asarray(rows, np.int64)
    owner = np.repeat(np.arange(len(rows)), rows)
    first = np.repeat(np.cumsum(rows) - rows, rows)
    return owner, STEPS - np.repeat(rows, rows) + (np.arange(len(owner)) - first)


def apply(held: np.ndarray, held_version: np.ndarray, new: np.ndarray, rows: np.ndarray,
          version: np.ndarray) -> np.ndarray:
    """Windows ``[n, STEPS, F]`` of versions ``version`` from the ``held`` ones (their
    versions ``held_version``, each no newer) and ``new`` ``[sum(rows), F]``: each window's
    newest ``rows[i]`` rows, concatenated. Raises RowsGap when a held version is older than
    ``version - rows`` (a whole window, rows = STEPS, needs nothing held)."""
    rows = np.asarray(rows, np.int64)
    if len(new) != rows.sum() or (rows < 0).any() or (rows > STEPS).any():
        raise ValueError(f"{len(new)} rows of data for rows {rows.tolist()[:8]}...")
    shift = np.minimum(version - held_version, STEPS)  # rows each window moves by
    gap = (shift > rows) | (shift < 0)  # (shift <= STEPS: never for a whole window)
    if gap.any():
        bad = np.flatnonzero(gap)[0]
        raise RowsGap(f"window {bad}: holds version {held_version[bad]}, rows {rows[bad]} of version "
                      f"{version[bad]}")
    # position p of window i: the held row p + shift while it exists, else the data row that
    # lands there (of the window's rows, the newest ``shift`` are the ones not held)
    p = np.arange(STEPS)
    src_held = p[None, :] + shift[:, None]
    from_held = src_held < STEPS
    start = np.cumsum(rows) - rows  # window i's first data row
    src_new = start[:, None] + rows[:, None] - STEPS + p[None, :]
    flat = np.concatenate([held.reshape(-1, N_FEATURES), new])
    index = np.where(from_held, np.arange(len(rows))[:, None] * STEPS + src_held, len(held) * STEPS + src_new)
    return flat[index]
