"""Feed the feature service with the tiny dataset's market data, bucket by bucket (the feed pump)."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import grpc

from rtvol.loadtest.feed import load, replay, run

__all__ = ["in_background", "replay"]


def in_background(target: str, data: Path, buckets: range, seconds: float) -> threading.Thread:
    """Feed ``buckets`` paced over about ``seconds`` on a thread; a service killed under it ends it."""
    rate = len(load(data, buckets)[1]) / seconds

    def pump() -> None:
        with contextlib.suppress(grpc.RpcError):
            run(target, data, buckets, rate=rate, batch=200)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return thread
