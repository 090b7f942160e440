"""What the request-path benchmarks share (`rtvol bench gateway`, `auth`, `pipeline`): sync
clients that make one call at a time, timed rounds with the CPU each process spends, a run's
machine/date/command, and the processes a run starts on free loopback ports (stopped in
reverse order)."""

from __future__ import annotations

import http.client
import os
import platform
import queue
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram

from rtvol import histograms, localproc
from rtvol.localproc import Proc, wait_until

CLIENT = "bench client"  # this process, in the per-process CPU figures

# ---- clients: one call at a time, from sync code ----------------------------------------------

class Http:
    """Keep-alive HTTP/1.1 on one connection (http.client: no client library in the way)."""

    def __init__(self, base: str, headers: dict[str, str] | None = None) -> None:
        host, port = base.removeprefix("http://").rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=10)
        self.headers = headers or {}  # e.g. an API key (loadtest/bench/auth.py)

    def reconnect(self) -> None:
        """A new connection (untimed): the server ends keep-alive connections idle for 5 s,
        which each one is while the other paths' rounds run."""
        self.conn.close()
        self.conn.connect()

    def call(self, method: str, path: str, body: bytes | None = None) -> bytes:
        self.conn.request(method, path, body, {**self.headers, **({"content-type": "application/json"}
                                                                  if body else {})})
        reply = self.conn.getresponse()
        data = reply.read()
        if reply.status != 200:
            raise RuntimeError(f"{method} {path}: HTTP {reply.status} {data[:200]!r}")
        return data


def metric_samples(base: str) -> Iterator[Any]:
    """Every sample a service's /metrics at ``base`` shows now (prometheus_client's parser)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(Http(base).call("GET", "/metrics").decode()):
        yield from family.samples


class StreamCaller:
    """One message at a time on an open bidirectional stream: send it, wait for its answer."""

    def __init__(self, open_stream: Callable[[Iterator[Any]], Any]) -> None:
        self._outbox: queue.Queue[Any] = queue.Queue()
        self._replies = open_stream(self._requests())

    def _requests(self) -> Iterator[Any]:
        while (msg := self._outbox.get()) is not None:
            yield msg

    def __call__(self, msg: Any) -> Any:
        self._outbox.put(msg)
        return next(self._replies)

    def close(self) -> None:
        self._outbox.put(None)
        self._replies.cancel()


# ---- timing -----------------------------------------------------------------------------------

@dataclass
class Timed:
    """A timed call and the check its answer must pass (run after the clock stops)."""

    name: str
    call: Callable[[int], Any]  # i -> answer
    check: Callable[[Any], bool] = lambda answer: True  # False: not from the path it claims
    prepare: Callable[[], None] = lambda: None  # before each round, untimed
    hist: HdrHistogram | None = None
    calls: int = 0  # timed and warm-up
    off: int = 0  # answers that failed the check (e.g. tier 2 answered a tier-1 path): not timed
    cpu_s: dict[str, float] = field(default_factory=dict)  # CPU spent by each process, timed calls

    def stats(self) -> dict[str, Any]:
        h = self.hist
        assert h is not None
        return {**histograms.summary(h), "off_path": self.off,
                "cpu_us_per_call": {k: round(v / max(1, h.get_total_count() + self.off) * 1e6)
                                    for k, v in self.cpu_s.items()
                                    if v > 0}}


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User + system CPU of each process and its live descendants that are not listed
    themselves (a gateway's worker processes, not the bench client's servers) so far (/proc;
    10 ms ticks: fine over a round)."""
    out, listed = {}, set(pids.values())
    for name, pid in pids.items():
        spent = [_cpu_s(p) for p in _tree(pid, listed)]
        if spent and spent[0] is not None:
            out[name] = sum(s for s in spent if s is not None)
    return out


def _cpu_s(pid: int) -> float | None:
    fields = localproc.stat_fields(pid)
    return None if fields is None else localproc.cpu_seconds(fields)


def _tree(pid: int, skip: set[int]) -> list[int]:
    """``pid`` first, then its descendants outside ``skip`` (and theirs)."""
    try:
        children = [int(c) for task in Path(f"/proc/{pid}/task").iterdir()
                    for c in (task / "children").read_text().split()]
    except OSError:
        children = []
    return [pid, *(p for c in children if c not in skip for p in _tree(c, skip))]


def measure(paths: list[Timed], requests: int, rounds: int, pids: dict[str, int], warmup: int = 100
            ) -> None:
    """``requests`` timed calls per path in ``rounds`` interleaved rounds (the order rotates
    each round), after ``warmup`` calls each; histograms 1 µs .. 10 s, 3 digits. The CPU each
    of ``pids`` spends during a path's calls is charged to that path: what a request costs
    the machine, which bounds the open-loop rate it can carry."""
    for p in paths:
        p.hist = histograms.latency_us()
        for i in range(warmup):  # unchecked: the first calls open streams (tier 2 may answer)
            p.call(i)
        p.calls += warmup
        if not wait_until(partial(_answers_right, p), 20, 0.1):
            raise RuntimeError(f"{p.name}: answers still fail their check after 20 s")
    per_round = max(1, requests // rounds)
    for r in range(rounds):
        for p in paths[r % len(paths):] + paths[:r % len(paths)]:
            assert p.hist is not None
            p.prepare()
            before = cpu_seconds(pids)
            for i in range(per_round):
                t0 = time.perf_counter()
                answer = p.call(i)
                elapsed_s = time.perf_counter() - t0
                if p.check(answer):  # an answer from another path (tier) is counted, not timed
                    histograms.record_s(p.hist, elapsed_s)
                else:
                    p.off += 1
            for name, spent in cpu_seconds(pids).items():
                p.cpu_s[name] = p.cpu_s.get(name, 0.0) + spent - before.get(name, spent)
            p.calls += per_round


def _answers_right(p: Timed) -> bool:
    return bool(p.check(p.call(0)))


def has_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None


def run_info(bench: str, argv: Sequence[str] | None) -> dict[str, str]:
    """Machine, date and command of a benchmark run (every report starts with them)."""
    return {"machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs"
                       + (", GPU" if has_gpu() else ", no GPU"),
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": f"rtvol bench {bench} " + " ".join(argv if argv is not None else sys.argv[1:])}


# ---- the processes --------------------------------------------------------------------------

class Processes:
    """What one benchmark run starts, on free loopback ports; stopped in reverse order."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[Any] = []  # localproc.Proc, or the sidecar bench's Echo
        self.pids: dict[str, int] = {CLIENT: os.getpid()}

    def start(self, name: str, cmd: list[str], ready: Callable[[], bool]) -> Proc:
        proc = Proc(name, cmd, self.workdir / f"{name}.log", ready, timeout_s=120)
        self.procs.append(proc)
        self.pids[name] = proc.pid
        return proc

    def kill(self, name: str) -> None:
        """SIGKILL the process started as ``name`` (a crash: no drain)."""
        self._named(name).kill()

    def restart(self, name: str) -> None:
        """Starts ``name`` again with its command (its ports); returns once it is ready."""
        proc = self._named(name)
        proc.restart()
        self.pids[name] = proc.pid  # its CPU is read from the new process

    def _named(self, name: str) -> Proc:
        return next(p for p in self.procs if isinstance(p, Proc) and p.name == name)

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()
