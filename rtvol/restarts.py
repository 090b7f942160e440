"""When a process that died may start again: one rule for `rtvol up`'s supervisor and the
gateway's worker processes.

Starts are spaced, not deaths: a process is restarted no sooner than the backoff after its
previous start, so one that ran a while comes back at once and one that keeps dying is held
back. The backoff doubles from 0.5 s to 30 s with each restart and is back to 0.5 s once the
process has stayed up 60 s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FIRST_S, MAX_S, STABLE_S = 0.5, 30.0, 60.0


@dataclass
class Backoff:
    """One process's restart history; times are time.monotonic() seconds."""

    started_at: float
    delay_s: float = field(default=FIRST_S)
    due: float | None = None  # when the dead process may start again; None while it lives

    def died(self, now: float) -> float:
        """The process is dead (found so at ``now`` the first time this is asked): when it may
        start again. Each death doubles the backoff for the next one."""
        if self.due is None:
            if now - self.started_at >= STABLE_S:
                self.delay_s = FIRST_S
            self.due = max(now, self.started_at + self.delay_s)
            self.delay_s = min(self.delay_s * 2, MAX_S)
        return self.due

    def started(self, now: float) -> None:
        self.started_at, self.due = now, None
