"""Gateway readiness without a gateway process: the breaker's trip and refusing, the start-up
and drain states, and a sidecar that nothing answers for (a real gRPC client, a free port)."""

from __future__ import annotations

import re

from rtvol.localproc import free_port
from rtvol.services.gateway.breaker import Breaker, State
from rtvol.services.gateway.readiness import Readiness
from rtvol.services.gateway.tier1 import SidecarClient, Tier1


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_trip_opens_without_traffic_and_keeps_it_open_while_repeated() -> None:
    clock = Clock()
    b = Breaker("r1", open_s=1.0, clock=clock)
    b.trip()
    assert b.state is State.OPEN and b.refusing() and not b.allow()
    opened = b.since
    clock.t = 0.9
    b.trip()  # the probe failed again: open for another open_s, same "since"
    clock.t = 1.5
    assert b.refusing() and not b.allow() and b.since == opened
    clock.t = 2.0
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


async def test_a_sidecar_nobody_answers_for_opens_the_breaker_and_says_since_when() -> None:
    client = SidecarClient(f"127.0.0.1:{free_port()}", "rtvol_cnn")
    tier1 = Tier1(client, Breaker("r2", open_s=60), timeout_s=0.1)
    r = Readiness(tier1)
    try:
        assert not await tier1.wait_ready(0.3)
        r.started()
        state = r.state()
        assert state["ready"] is True and state["tier"] == 2
        assert re.fullmatch(r"sidecar unreachable \(UNAVAILABLE\) since \d{4}-\d\d-\d\dT[\d:.]+Z",
                            state["reason"]), state
        assert tier1.breaker.state is State.OPEN and not tier1.breaker.allow()
    finally:
        await client.close()
