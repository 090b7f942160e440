"""Fan-out consumers: bounded queues with their overflow policy, alerts and VWAP."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from rtvol.features.online_batch import BOOK, TRADE, R, UpdateBatch
from rtvol.services.feature.alerts import Alerts
from rtvol.services.feature.fanout import Consumer, FanOut, Ingested, Policy
from rtvol.services.feature.vwap import Vwap


def _batch(n: int, stock: int = 0, kind: int = BOOK, **cols: np.ndarray) -> UpdateBatch:
    base = {"stock_id": np.full(n, stock), "seq": np.arange(n), "time": np.arange(n, dtype=float),
            "kind": np.full(n, kind), "bid1": np.full(n, 1.0), "ask1": np.full(n, 1.001),
            "bid2": np.full(n, 0.999), "ask2": np.full(n, 1.002), "bid_size1": np.full(n, 10.0),
            "ask_size1": np.full(n, 10.0), "bid_size2": np.full(n, 10.0), "ask_size2": np.full(n, 10.0),
            "price": np.full(n, 1.0), "size": np.full(n, 1.0), "order_count": np.ones(n)}
    return UpdateBatch.from_columns(base | cols)


def _item(b: UpdateBatch, reason: np.ndarray | None = None, wall_s: float = 0.0) -> Ingested:
    return Ingested(b, np.zeros(len(b), np.int8) if reason is None else reason, wall_s)


@pytest.mark.parametrize(("policy", "kept"), [("drop_oldest", [3, 4]), ("drop_newest", [1, 2])])
def test_a_full_queue_drops_by_its_policy_without_blocking_the_producer(policy: Policy,
                                                                          kept: list[int]) -> None:
    started, release, seen = threading.Event(), threading.Event(), []

    def handle(item: Ingested) -> None:
        started.set()
        release.wait(5)  # a stuck consumer: the producer must still not block
        seen.append(int(item.batch.seq[0]))

    c = Consumer(f"test-{policy}", handle, maxsize=2, policy=policy)
    c.start()
    c.offer(_item(_batch(1, seq=np.array([0]))))
    assert started.wait(5)  # the worker holds item 0: the queue is empty
    for s in (1, 2, 3, 4):
        c.offer(_item(_batch(1, seq=np.array([s]))))  # returns at once although nothing drains
    assert c.drops == 2 and len(c.items) == 2
    release.set()
    assert c.drain(5)
    c.stop()
    assert seen == [0, *kept]


def test_a_failing_consumer_keeps_running_and_fanout_reaches_every_consumer() -> None:
    got: list[int] = []

    def broken(item: Ingested) -> None:
        raise RuntimeError("bug")

    a, b = Consumer("broken", broken, 4, "drop_oldest"), Consumer("ok", lambda i: got.append(len(i.batch)),
                                                                  4, "drop_oldest")
    fan = FanOut([a, b])
    fan.start()
    fan.offer(_batch(3), np.zeros(3, np.int8), 0.0)
    fan.offer(_batch(2), np.zeros(2, np.int8), 0.0)
    assert a.drain(5) and b.drain(5)
    fan.stop()
    assert got == [3, 2] and not a._thread.is_alive()


def test_vwap_is_per_stock_and_restarts_with_each_bucket() -> None:
    v = Vwap(3)
    trades = _batch(4, kind=TRADE, stock_id=np.array([0, 0, 1, 0]), time=np.array([1.0, 2.0, 3.0, 4.0]),
                    price=np.array([10.0, 20.0, 5.0, 99.0]), size=np.array([1.0, 3.0, 2.0, 1.0]))
    reason = np.array([0, 0, 0, R["non_positive"]], np.int8)  # a rejected trade does not count
    v.handle(_item(trades, reason))
    np.testing.assert_allclose(v.vwap(np.array([0, 1])), [(10 + 60) / 4, 5.0])
    assert np.isnan(v.vwap(np.array([2]))[0])
    v.handle(_item(_batch(1, kind=TRADE, time=np.array([601.0]), price=np.array([7.0]))))
    assert v.vwap(np.array([0]))[0] == 7.0


def test_alerts_for_crossed_books_spikes_and_stale_feeds() -> None:
    sent: list[dict] = []
    now = [100.0]
    alerts = Alerts(2, lambda m: sent.append(json.loads(m)), spike_sigmas=6.0, warmup=20,
                    stale_after_s=5.0, clock=lambda: now[0])
    rng = np.random.default_rng(0)
    bid = 1.0 * np.exp(np.cumsum(rng.normal(0, 1e-4, 40)))
    bid[-1] = bid[-2] * 1.01  # a 100-sigma jump at the end
    calm = _batch(40, stock=0, bid1=bid, ask1=bid + 1e-3, bid2=bid - 1e-3, ask2=bid + 2e-3)
    alerts.handle(_item(calm, wall_s=now[0]))
    crossed = _batch(1, stock=1)
    alerts.handle(_item(crossed, np.array([R["crossed_book"]], np.int8), wall_s=now[0]))
    assert [(m["kind"], m["stock_ids"]) for m in sent] == [("volatility_spike", [0]), ("crossed_book", [1])]
    alerts.tick()
    assert len(sent) == 2  # fresh feed: nothing stale; stock 1 never had an accepted update
    now[0] += 6.0
    alerts.tick()
    alerts.tick()  # once per episode
    assert [(m["kind"], m["stock_ids"]) for m in sent[2:]] == [("stale_feed", [0])]
