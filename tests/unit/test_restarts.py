"""The one restart backoff `rtvol up`'s supervisor and the gateway's workers share."""

from __future__ import annotations

from rtvol.restarts import FIRST_S, MAX_S, STABLE_S, Backoff


def test_a_crash_loop_is_held_back_doubling_to_the_cap() -> None:
    b, now, waits = Backoff(0.0), 0.0, []
    for _ in range(10):
        now += 0.1  # dies 0.1 s after each start
        due = b.died(now)
        assert b.died(now + 0.05) == due  # asked again while dead: the same answer
        waits.append(round(due - b.started_at, 3))
        now = due
        b.started(now)
    assert waits == [FIRST_S, 1.0, 2.0, 4.0, 8.0, 16.0, MAX_S, MAX_S, MAX_S, MAX_S]


def test_a_process_that_ran_a_while_restarts_at_once() -> None:
    b = Backoff(0.0)
    b.died(0.1)
    b.started(0.5)  # the backoff is now 1 s
    assert b.died(20.0) == 20.0  # ran longer than the backoff: no wait
    b.started(20.0)
    assert b.died(20.1) == 22.0  # doubled again: 2 s after that start
    b.started(22.0)
    assert b.died(22.0 + STABLE_S) == 22.0 + STABLE_S  # stayed up: reset...
    b.started(22.0 + STABLE_S)
    assert b.died(22.1 + STABLE_S) == 22.0 + STABLE_S + 2 * FIRST_S  # ...and doubled from the first step
