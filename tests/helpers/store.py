"""Read back what a feature service wrote to Redis, as a client outside the stack would."""

from __future__ import annotations

import asyncio

import numpy as np

from rtvol.features.spec import spec_hash
from rtvol.featurestore import RedisStore


def stored_windows(redis_url: str, ids: list[int]) -> np.ndarray:
    """The windows [n, 50, 12] stored for ``ids`` (zeros where none is stored)."""
    async def read() -> np.ndarray:
        store = RedisStore.connect(redis_url, spec_hash())
        try:
            return (await store.read(np.asarray(ids, np.int32))).windows
        finally:
            await store.close()
    return asyncio.run(read())
