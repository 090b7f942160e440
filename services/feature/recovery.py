"""At start, the online state of the stocks this replica owns comes back from the store.

Each window write carries the stock's online checkpoint (publisher.py), so the state
resumes at the last write: sequence numbers and event times accepted before a crash are
still rejected as replays after it, the windows are never rolled back, and GetFeatures
finds every stock the store holds. Updates accepted after the last write were lost with
the process; a feed that resends them gets them accepted once.
"""

from __future__ import annotations

import logging

import numpy as np

from rtvol.features import online_checkpoint
from rtvol.features.online import OnlineState
from rtvol.featurestore import FeatureStore
from rtvol.services.feature import metrics
from rtvol.services.feature.publisher import Publisher

log = logging.getLogger(__name__)
CHUNK = 1024  # stocks per round trip


async def recover(state: OnlineState, store: FeatureStore, publisher: Publisher, stocks: np.ndarray) -> int:
    """Restore ``stocks`` from ``store``; returns how many had state there."""
    restored = 0
    for lo in range(0, len(stocks), CHUNK):
        idx = stocks[lo:lo + CHUNK]
        found, records = online_checkpoint.decode(await store.read_checkpoints(idx))
        online_checkpoint.restore(state, idx[found], records)
        stored = await store.read(idx)
        # a window ahead of its checkpoint (or without one) wins: its marks are the newer ones
        ahead = stored.found & (~found | (stored.sequence > state.seq[idx]))
        online_checkpoint.adopt_windows(state, idx[ahead], stored.windows[ahead], stored.sequence[ahead],
                                        stored.event_time_us[ahead] / 1e6)
        publisher.changed_us[idx[stored.found]] = stored.written_us[stored.found]
        publisher.received_us[idx[stored.found]] = stored.received_us[stored.found]
        metrics.RECOVERED.labels("checkpoint").inc(int(found.sum()))
        metrics.RECOVERED.labels("window").inc(int(ahead.sum()))
        restored += int((found | ahead).sum())
    log.info("recovered the state of %d of %d stocks from the store", restored, len(stocks))
    return restored
