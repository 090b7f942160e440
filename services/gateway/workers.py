"""Gateway worker processes (``--workers N``, N > 1): a small parent that runs N gateways.

Each worker is the whole gateway (`main.serve`) in its own process, binding the same HTTP
and gRPC ports with SO_REUSEPORT, so the kernel spreads new connections over them; each
follows the feature service's Watch stream of its shard of the stocks only, infers those and
shares their signals with the others through a table in shared memory, so each holds every
signal (services/gateway/shards.py; docs/ARCHITECTURE.md, "Gateway worker processes").
The parent serves no request:
- creates the shared signal table and one eventfd per worker before the first start, so a
  restarted worker maps the same table (and finds the other shards' signals in it);
- starts the workers with the parent's own flags plus ``--workers 1 --worker I``;
- restarts a worker that dies, backing off as `rtvol up`'s supervisor does (rtvol/restarts.py);
- on SIGTERM/SIGINT forwards SIGTERM to every worker and waits for them to drain (each ends
  itself within its drain time + rpc.EXIT_MARGIN_S), then SIGKILLs any left;
- its workers get SIGTERM from the kernel if the parent dies (PR_SET_PDEATHSIG), so killing
  the parent with SIGKILL leaves no orphan serving the ports;
- metrics: workers write prometheus-client's multiprocess files into one directory (cleaned
  at start); /metrics of any worker, and the parent's --metrics-port, sum them
  (services/gateway/multiproc.py).
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rtvol import cpus, rpc, telemetry, tls
from rtvol.restarts import Backoff
from rtvol.services.gateway import multiproc, shards, signaltable
from rtvol.services.gateway.settings import GatewaySettings

log = logging.getLogger("rtvol.gateway.workers")
PR_SET_PDEATHSIG = 1
POLL_S = 0.1


def count(s: GatewaySettings) -> int:
    """The worker processes to run: the setting, or one per core this process may use where
    workers can share signals (signaltable.supported), else one: the default never refuses."""
    if s.workers > 0:
        return s.workers
    return cpus.available() if signaltable.supported() else 1


@dataclass
class Worker:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    backoff: Backoff = field(default_factory=lambda: Backoff(time.monotonic()))
    restarts: int = 0


class Supervisor:
    def __init__(self, argv: Sequence[str], workers: int, drain_seconds: float, metrics_dir: Path,
                 stocks: int) -> None:
        self.argv, self.drain_seconds, self.metrics_dir = list(argv), drain_seconds, metrics_dir
        self.workers = [Worker(i) for i in range(1, workers + 1)]
        self.stop = threading.Event()
        self.table_fd, self.wake_fds = signaltable.create(stocks), shards.new_wake_fds(workers)

    def layout(self, w: Worker) -> shards.Layout:
        return shards.Layout(w.index - 1, len(self.workers), self.table_fd, self.wake_fds)

    def command(self, w: Worker) -> list[str]:
        # flags given later win, so these override --workers in argv
        return [sys.executable, "-m", "rtvol.services.gateway.main", *self.argv,
                "--workers", "1", "--worker", str(w.index)]

    def start(self, w: Worker) -> None:
        env = {**os.environ, multiproc.ENV: str(self.metrics_dir), shards.ENV: self.layout(w).encode()}
        w.proc = subprocess.Popen(self.command(w), env=env, stdin=subprocess.DEVNULL,
                                  pass_fds=(self.table_fd, *self.wake_fds),
                                  preexec_fn=_dies_with(os.getpid()))
        w.backoff.started(time.monotonic())
        log.info("worker %d started (pid %d)", w.index, w.proc.pid)

    def run(self) -> int:
        """Until SIGTERM/SIGINT; returns the exit code (0: every worker drained cleanly)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop.set())
        for w in self.workers:
            self.start(w)
        while not self.stop.wait(POLL_S):
            for w in self.workers:
                self.tend(w)
        try:
            return self.shut_down()
        finally:
            for fd in (self.table_fd, *self.wake_fds):
                os.close(fd)

    def tend(self, w: Worker) -> None:
        """Restart ``w`` if it has died and its backoff has passed."""
        now = time.monotonic()
        assert w.proc is not None
        if w.proc.poll() is None:
            return
        if w.backoff.due is None:  # just found dead
            multiproc.mark_dead(self.metrics_dir, w.proc.pid)
            log.warning("worker %d (pid %d) exited with %s; restarting in %.1f s", w.index, w.proc.pid,
                        w.proc.returncode, w.backoff.died(now) - now)
        if now >= w.backoff.died(now):
            self.start(w)
            w.restarts += 1

    def shut_down(self) -> int:
        """SIGTERM to every worker, wait for their drains (bounded), SIGKILL what is left."""
        live = [w.proc for w in self.workers if w.proc is not None and w.proc.poll() is None]
        for p in live:
            p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.drain_seconds + rpc.EXIT_MARGIN_S + 1.0
        codes = []
        for p in live:
            try:
                codes.append(p.wait(max(0.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                log.error("worker pid %d did not stop in time: killed", p.pid)
                p.kill()
                codes.append(p.wait())
        # a worker still starting (e.g. a restart) ends at once on SIGTERM: its handler comes
        # with serving, so it leaves nothing undrained
        return next((c for c in codes if c not in (0, -signal.SIGTERM)), 0)


def _dies_with(parent: int) -> Callable[[], None]:
    """In the child before exec: SIGTERM when the parent dies (and exit now if it already has)."""
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before the fork

    def arm() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            os._exit(1)
    return arm


def _check_ports(s: GatewaySettings) -> None:
    """Fixed ports, and free: a bind without SO_REUSEPORT fails where a running gateway (whose
    workers set it) holds the port, so a second gateway cannot join its group by mistake."""
    if not s.port or not s.grpc_port:
        raise SystemExit("--workers above 1 needs fixed --port and --grpc-port (0 would give each worker "
                         "its own port)")
    for port in (s.port, s.grpc_port):
        family = socket.AF_INET6 if ":" in s.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((s.host, port))
            except OSError as e:
                raise SystemExit(f"cannot bind {s.host}:{port}: {e}") from e


def supervise(s: GatewaySettings, argv: Sequence[str], workers: int) -> int:
    _check_ports(s)
    given = os.environ.get(multiproc.ENV)
    metrics_dir = Path(given) if given else Path(tempfile.mkdtemp(prefix="rtvol-gateway-metrics-"))
    multiproc.clean(metrics_dir)
    try:
        if s.metrics_port:
            telemetry.serve_metrics(s.metrics_port, s.host, tls.metrics(s), multiproc.registry(metrics_dir))
        log.info("%d gateway workers on http %s:%d grpc %s:%d", workers, s.host, s.port, s.host, s.grpc_port)
        return Supervisor(argv, workers, s.drain_seconds, metrics_dir, s.stocks).run()
    finally:
        if not given:
            shutil.rmtree(metrics_dir, ignore_errors=True)
