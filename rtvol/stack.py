"""The local stack: redis-server, feature service, model sidecar and gateway as processes.

Services are started by command line (``python -m rtvol.cli serve ...``), never imported,
so the shared library keeps its layering. `up` writes pids, ports and commands to
``<run_dir>/stack.json`` and logs beside it; `down` and `status` work from that file in
any later process.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from rtvol import localproc

STATE = "stack.json"


@dataclass(frozen=True)
class Ports:
    """DESIGN.md's defaults; ``from_base`` and ``free`` for side-by-side stacks and tests."""

    redis: int = 6379
    feature: int = 50052
    feature_metrics: int = 9102
    model: int = 8001
    model_metrics: int = 8002
    gateway: int = 8080
    gateway_grpc: int = 50051

    @classmethod
    def from_base(cls, base: int) -> Ports:
        return cls(*(base + i for i in range(len(fields(cls)))))

    @classmethod
    def free(cls) -> Ports:
        return cls(*(localproc.free_port() for _ in fields(cls)))


@dataclass
class Component:
    name: str
    pid: int
    port: int
    health: str  # "redis", "grpc" or "http": how `status` probes it
    target: str
    cmd: list[str]
    log: str

    def check(self) -> bool:
        probe = {"redis": lambda: localproc.redis_ready(self.port),
                 "grpc": lambda: localproc.grpc_ready(self.target),
                 "http": lambda: localproc.http_ready(self.target + "/readyz")}[self.health]()
        return probe()


# ---- command lines (the integration tests build theirs with these too) ---------------------

def serve(*args: str) -> list[str]:
    return [sys.executable, "-m", "rtvol.cli", "serve", *args]


def redis_cmd(port: int, workdir: Path) -> list[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server not installed (apt-get install redis-server)")
    return [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(workdir)]


def feature_cmd(port: int, metrics_port: int, redis_url: str, stocks: int, *extra: str) -> list[str]:
    return serve("feature", "--port", str(port), "--metrics-port", str(metrics_port),
                 "--redis-url", redis_url, "--stocks", str(stocks), *extra)


def sidecar_cmd(port: int, metrics_port: int, repo: Path, *extra: str) -> list[str]:
    return serve("model", "--port", str(port), "--metrics-port", str(metrics_port),
                 "--model-repository", str(repo), *extra)


def gateway_cmd(port: int, grpc_port: int, repo: Path, *extra: str) -> list[str]:
    return serve("gateway", "--port", str(port), "--grpc-port", str(grpc_port),
                 "--model-repository", str(repo), *extra)


# ---- up / down / status ----------------------------------------------------------------------

class StackError(Exception):
    """The stack could not be brought up (or is already up): a user-facing message."""


def load(run_dir: Path) -> list[Component]:
    path = run_dir / STATE
    if not path.exists():
        return []
    return [Component(**c) for c in json.loads(path.read_text())["components"]]


def _save(run_dir: Path, comps: list[Component], ports: Ports) -> None:
    tmp = run_dir / (STATE + ".tmp")
    tmp.write_text(json.dumps({"ports": asdict(ports), "started": time.time(),
                               "components": [asdict(c) for c in comps]}, indent=2))
    tmp.replace(run_dir / STATE)


def up(run_dir: Path, repo: Path, ports: Ports, stocks: int, backend: str = "auto",
       timeout_s: float = 90.0) -> list[Component]:
    """Start every component in dependency order, each ready before the next starts.

    Without a redis-server binary the feature service keeps its in-process store and the
    gateway runs without one (it answers from its volatility estimate, tier 3).
    """
    if any(localproc.alive(c.pid) for c in load(run_dir)):
        raise StackError(f"a stack is already running from {run_dir} (rtvol down first)")
    run_dir.mkdir(parents=True, exist_ok=True)
    comps: list[Component] = []
    procs: list[localproc.Proc] = []

    def start(name: str, cmd: list[str], port: int, health: str, target: str) -> None:
        log = run_dir / f"{name}.log"
        ready = Component(name, 0, port, health, target, cmd, str(log)).check
        try:
            proc = localproc.Proc(name, cmd, log, ready, timeout_s, detach=True)
        except RuntimeError as e:
            for p in reversed(procs):
                p.stop()
            raise StackError(str(e)) from e
        procs.append(proc)
        comps.append(Component(name, proc.pid, port, health, target, cmd, str(log)))
        _save(run_dir, comps, ports)  # after each start: a failed `up` still leaves `down` a list

    redis_url = ""
    if shutil.which("redis-server"):
        redis_url = f"redis://127.0.0.1:{ports.redis}/0"
        start("redis", redis_cmd(ports.redis, run_dir), ports.redis, "redis", redis_url)
    feature = f"127.0.0.1:{ports.feature}"
    start("feature", feature_cmd(ports.feature, ports.feature_metrics, redis_url, stocks),
          ports.feature, "grpc", feature)
    model = f"127.0.0.1:{ports.model}"
    start("model", sidecar_cmd(ports.model, ports.model_metrics, repo, "--backend", backend),
          ports.model, "grpc", model)
    start("gateway", gateway_cmd(ports.gateway, ports.gateway_grpc, repo, "--redis-url", redis_url,
                                 "--model-url", model, "--feature-url", feature, "--stocks", str(stocks)),
          ports.gateway, "http", f"http://127.0.0.1:{ports.gateway}")
    return comps


def down(run_dir: Path, timeout_s: float = 15.0) -> dict[str, str]:
    """Stop every component in reverse order; a pid now running another program is left alone."""
    result = {}
    for c in reversed(load(run_dir)):
        if localproc.alive(c.pid) and localproc.executable(c.pid) != c.cmd[0]:
            result[c.name] = "gone (pid reused by another process)"
            continue
        result[c.name] = localproc.terminate(c.pid, timeout_s)
    (run_dir / STATE).unlink(missing_ok=True)
    return result


def status(run_dir: Path) -> list[tuple[Component, bool, bool]]:
    """(component, running, healthy) for each component of the recorded stack."""
    out = []
    for c in load(run_dir):
        running = localproc.alive(c.pid)
        out.append((c, running, running and c.check()))
    return out
