"""The Subscribe hub: a slow subscriber loses only signals a newer one of the same stock
replaced (counted), always gets each stock's newest however many stocks changed at once, never
blocks the publisher; a subscription takes everything waiting at once; a closed hub ends each
stream after what it had queued."""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY

from rtvol.services.gateway.hub import Hub
from rtvol.services.gateway.signal import Signal


def _dropped() -> float:
    return REGISTRY.get_sample_value("rtvol_gateway_push_dropped_total") or 0.0


def test_a_slow_subscriber_gets_each_stocks_newest_signal_and_the_replaced_are_counted() -> None:
    async def run() -> None:
        hub = Hub()
        every, one = hub.subscribe(None), hub.subscribe(frozenset({4}))
        before = _dropped()
        hub.publish([Signal(s, window_version=1) for s in range(10_000)])  # never waits for a reader
        hub.publish([Signal(s, window_version=2) for s in (3, 4)])
        got = await every.take() or []
        assert len(got) == 10_000 and {s.stock_id: s.window_version for s in got}[4] == 2
        assert [(s.stock_id, s.window_version) for s in got[-2:]] == [(3, 2), (4, 2)]  # arrival order
        assert [(s.stock_id, s.window_version) for s in await one.take() or []] == [(4, 2)]
        assert _dropped() == before + 3  # 3 and 4 for every, 4 for one
        hub.publish([Signal(7)])
        hub.close()
        assert [s.stock_id for s in await every.take() or []] == [7]
        assert await every.take() is None
        assert await one.take() is None

    asyncio.run(run())
