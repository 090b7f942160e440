"""`rtvol up`'s supervisor: a detached process that restarts a component that dies.

It watches the pids in ``<run_dir>/stack.json``; a process that is gone is started again
with its recorded command line (same ports, its log appended to), and the component's new
pid and restart count are written back, so `rtvol status` shows them. Restarts of one
process back off: 0.5 s, doubling to 30 s, back to 0.5 s once it has stayed up 60 s.
`rtvol down` stops the supervisor first, then the components.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from rtvol import localproc, stack

log = logging.getLogger("rtvol.supervisor")
FIRST_BACKOFF_S, MAX_BACKOFF_S, STABLE_S = 0.5, 30.0, 60.0


@dataclass
class _Process:
    """One supervised process (one pid may serve several components: embedded)."""

    backoff_s: float = FIRST_BACKOFF_S
    next_start: float = 0.0
    started: float = field(default_factory=time.monotonic)


def run(run_dir: Path, poll_s: float = 0.2) -> None:
    """Until SIGTERM/SIGINT: restart whatever in the stack has died."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    watched: dict[int, _Process] = {}
    while not stop.wait(poll_s):
        comps = stack.load(run_dir)
        for pid in dict.fromkeys(c.pid for c in comps):
            proc = watched.setdefault(pid, _Process())
            if localproc.alive(pid):
                if time.monotonic() - proc.started > STABLE_S:
                    proc.backoff_s = FIRST_BACKOFF_S
                continue
            if time.monotonic() < proc.next_start:
                continue
            members = [c for c in comps if c.pid == pid]
            new = _start(members[0])
            log.warning("%s (pid %d) died; restarted as pid %d, next restart no sooner than %.1f s after "
                        "it starts", "+".join(c.name for c in members), pid, new, proc.backoff_s)
            for c in members:
                c.pid, c.restarts = new, c.restarts + 1
            watched[new] = _Process(min(proc.backoff_s * 2, MAX_BACKOFF_S),
                                    time.monotonic() + proc.backoff_s)
            del watched[pid]
            stack.update(run_dir, comps)


def _start(c: stack.Component) -> int:
    with open(c.log, "ab") as out:
        return subprocess.Popen(c.cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True).pid
