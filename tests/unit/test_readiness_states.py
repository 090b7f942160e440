"""Gateway readiness without a gateway process: the breaker's trip and refusing, the start-up
and drain states. (The sidecar's part needs the inference stubs, which clash with
tritonclient's in one pytest process: tests/integration/test_gateway_readiness.py has it.)"""

from __future__ import annotations

from rtvol.services.gateway.breaker import Breaker, State
from rtvol.services.gateway.readiness import Readiness


def test_trip_opens_without_traffic_and_keeps_it_open_while_repeated() -> None:
    now = [0.0]
    b = Breaker("r1", open_s=1.0, clock=lambda: now[0])
    b.trip()
    assert b.state is State.OPEN and b.refusing() and not b.allow()
    opened = b.since
    now[0] = 0.9
    b.trip()  # the probe failed again: open for another open_s, same "since"
    now[0] = 1.5
    assert b.refusing() and not b.allow() and b.since == opened
    now[0] = 2.0
    assert not b.refusing()  # refusing() never moves the state; allow() takes the probe slot
    assert b.state is State.OPEN
    assert b.allow() and b.state is State.HALF_OPEN


def test_not_ready_while_starting_or_draining_and_tier_2_without_a_sidecar() -> None:
    r = Readiness(None)
    assert r.state() == {"ready": False, "reason": "starting"}
    r.starting("reading the volatility estimates")
    assert r.state() == {"ready": False, "reason": "starting: reading the volatility estimates"}
    r.started()
    assert r.state() == {"ready": True, "tier": 2, "reason": "no sidecar configured (--model-url)"}
    r.drain()
    assert r.state() == {"ready": False, "reason": "draining"}
