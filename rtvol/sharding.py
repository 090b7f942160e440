"""Stock -> feature-service replica: replica ``stock_id mod replicas`` owns a stock.

Every party computes it the same way: a replica rejects updates of stocks it does not own
(``not_owned``), a feed splits its messages by it, and readers need nothing (windows are in
the store under the stock's own key). A replica's ordinal is the trailing number of a
StatefulSet pod's name (``rtvol-feature-2`` -> 2). Changing ``replicas`` remaps stocks:
each replica restores its new stocks' state from the store at start.
"""

from __future__ import annotations

import re

import numpy as np


def owner(stock_ids: np.ndarray, replicas: int) -> np.ndarray:
    """The ordinal of the replica that owns each stock."""
    return np.asarray(stock_ids, np.int64) % replicas


def owned(n_stocks: int, replicas: int, ordinal: int) -> np.ndarray:
    """Mask over stock ids 0..n_stocks-1: those replica ``ordinal`` owns."""
    if not 0 <= ordinal < replicas:
        raise ValueError(f"replica ordinal {ordinal} is not in 0..{replicas - 1} (replicas {replicas})")
    return owner(np.arange(n_stocks), replicas) == ordinal


def ordinal_of(hostname: str) -> int:
    """A StatefulSet pod's ordinal from its name (``NAME-ORDINAL``); 0 for any other name."""
    m = re.search(r"-(\d+)$", hostname)
    return int(m.group(1)) if m else 0


def targets(spec: str) -> list[str]:
    """``HOST:PORT[,HOST:PORT...]``: the feature-service replicas' gRPC targets in ordinal order."""
    return [t.strip() for t in spec.split(",") if t.strip()]


# Watch call metadata: this watcher (a gateway worker) takes only the stocks of its shard,
# ``INDEX/COUNT``: those whose id mod COUNT is INDEX.
WATCH_SHARD = "rtvol-watch-shard"


def shard_metadata(index: int, count: int) -> tuple[str, str]:
    return WATCH_SHARD, f"{index}/{count}"


def parse_shard(text: str) -> tuple[int, int]:
    """``INDEX/COUNT`` -> (index, count); ValueError naming what is wrong."""
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"{WATCH_SHARD}: {text[:40]!r} is not INDEX/COUNT") from None
    if not 0 <= index < count <= 4096:
        raise ValueError(f"{WATCH_SHARD}: {text[:40]!r}: INDEX must be in 0..COUNT-1, COUNT in 1..4096")
    return index, count
