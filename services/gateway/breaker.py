"""A small circuit breaker, one per upstream (sidecar, feature store).

closed: calls pass; each outcome (error, timeout, or latency over budget = failure) goes
into a window of the last ``window`` outcomes; with at least ``min_calls`` of them and a
failure rate >= ``error_rate`` it opens. open: calls are refused for ``open_s``, then it is
half-open: one probe at a time passes; ``probes`` successes in a row close it, a failure
opens it again. Everything is O(1) per call (a ring of booleans and a running count), a
few hundred nanoseconds, which is why no library is used.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import IntEnum

from rtvol.services.gateway import metrics


class State(IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class Breaker:
    def __init__(self, name: str, window: int = 20, min_calls: int = 5, error_rate: float = 0.5,
                 open_s: float = 1.0, probes: int = 2, latency_budget_s: float = float("inf"),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name, self.window, self.min_calls, self.error_rate = name, window, min_calls, error_rate
        self.open_s, self.probes, self.latency_budget_s, self.clock = open_s, probes, latency_budget_s, clock
        self.state = State.CLOSED
        self._ring = [False] * window  # True = failure
        self._pos = self._count = self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        self._successes = 0
        self.since = time.time()  # wall clock of the last state change, for /readyz
        metrics.BREAKER_STATE.labels(name).set(State.CLOSED)

    def allow(self) -> bool:
        """May a call go to this upstream now? In half-open, one probe at a time."""
        if self.state is State.CLOSED:
            return True
        if self.state is State.OPEN:
            if self.clock() - self._opened_at < self.open_s:
                return False
            self._move(State.HALF_OPEN)
        if self._probing:
            return False
        self._probing = True
        return True

    def refusing(self) -> bool:
        """Open and still inside ``open_s``: calls are refused (no side effects, unlike allow)."""
        return self.state is State.OPEN and self.clock() - self._opened_at < self.open_s

    def trip(self) -> None:
        """Open now whatever the window says, or stay open ``open_s`` longer: the upstream's own
        health check failed (a sidecar that is down opens its breaker without any traffic)."""
        self._open()

    def record(self, ok: bool, latency_s: float = 0.0) -> None:
        failed = not ok or latency_s > self.latency_budget_s
        if self.state is State.HALF_OPEN:
            self._probing = False
            if failed:
                self._open()
            else:
                self._successes += 1
                if self._successes >= self.probes:
                    self._reset()
                    self._move(State.CLOSED)
            return
        if self.state is State.OPEN:
            return  # a late answer to a call made before it opened
        self._failures += failed - self._ring[self._pos]
        self._ring[self._pos] = failed
        self._pos = (self._pos + 1) % self.window
        self._count = min(self._count + 1, self.window)
        if self._count >= self.min_calls and self._failures >= self.error_rate * self._count:
            self._open()

    def _open(self) -> None:
        self._opened_at = self.clock()
        self._probing = False
        self._move(State.OPEN)

    def _reset(self) -> None:
        self._ring = [False] * self.window
        self._pos = self._count = self._failures = self._successes = 0

    def _move(self, to: State) -> None:
        if to is not self.state:
            self._successes = 0
            metrics.BREAKER_TRANSITIONS.labels(self.name, to.name.lower()).inc()
            metrics.BREAKER_STATE.labels(self.name).set(to)
            self.state = to
            self.since = time.time()
