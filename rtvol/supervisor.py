"""`rtvol up`'s supervisor: a detached process that restarts a component that dies.

It watches the pids in ``<run_dir>/stack.json``; a process that is gone is started again
with its recorded command line (same ports, its log appended to), and the component's new
pid and restart count are written back, so `rtvol status` shows them. Restarts of one
process back off as the gateway's workers do (rtvol/restarts.py: 0.5 s after its previous
start, doubling to 30 s, back to 0.5 s once it has stayed up 60 s).
`rtvol down` stops the supervisor first, then the components.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from pathlib import Path

from rtvol import localproc, stack
from rtvol.restarts import Backoff

log = logging.getLogger("rtvol.supervisor")


def run(run_dir: Path, poll_s: float = 0.2) -> None:
    """Until SIGTERM/SIGINT: restart whatever in the stack has died."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    watched: dict[int, Backoff] = {}  # by pid (one pid may serve several components: embedded)
    while not stop.wait(poll_s):
        comps = stack.load(run_dir)
        for pid in dict.fromkeys(c.pid for c in comps):
            backoff = watched.setdefault(pid, Backoff(time.monotonic()))
            if localproc.alive(pid):
                continue
            now = time.monotonic()
            if now < backoff.died(now):
                continue
            members = [c for c in comps if c.pid == pid]
            new = _start(members[0])
            backoff.started(time.monotonic())
            log.warning("%s (pid %d) died; restarted as pid %d, a next one no sooner than %.1f s after "
                        "this start", "+".join(c.name for c in members), pid, new, backoff.delay_s)
            for c in members:
                c.pid, c.restarts = new, c.restarts + 1
            watched[new] = watched.pop(pid)
            stack.update(run_dir, comps)


def _start(c: stack.Component) -> int:
    with open(c.log, "ab") as out:
        return subprocess.Popen(c.cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True).pid
