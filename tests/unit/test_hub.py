"""The Subscribe hub: a slow subscriber loses its oldest signals (counted), never blocks the
publisher; a subscription takes everything waiting at once; a closed hub ends each stream
after what it had queued."""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY

from rtvol.services.gateway.hub import Hub
from rtvol.services.gateway.signal import Signal


def _dropped() -> float:
    return REGISTRY.get_sample_value("rtvol_gateway_push_dropped_total") or 0.0


def test_a_full_subscription_drops_its_oldest_and_counts_them() -> None:
    async def run() -> None:
        hub = Hub(depth=3)
        every, one = hub.subscribe(None), hub.subscribe(frozenset({4}))
        before = _dropped()
        hub.publish([Signal(s) for s in range(5)])  # never waits for a reader
        assert [s.stock_id for s in await every.take() or []] == [2, 3, 4]
        assert [s.stock_id for s in await one.take() or []] == [4]
        assert _dropped() == before + 2
        hub.publish([Signal(7)])
        hub.close()
        assert [s.stock_id for s in await every.take() or []] == [7]
        assert await every.take() is None
        assert await one.take() is None

    asyncio.run(run())
