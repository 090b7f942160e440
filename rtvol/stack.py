"""The local stack: redis-server, feature service, model sidecar and gateway as processes.

Without Redis (no redis-server binary, or ``no_redis``) the feature service and gateway run
in one process (``rtvol serve embedded``) sharing its in-process feature store; stack.json
then lists both under the same pid, and `down` stops that process once.

Services are started by command line (``python -m rtvol.cli serve ...``), never imported,
so the shared library keeps its layering. `up` writes pids, ports and commands to
``<run_dir>/stack.json`` and logs beside it; `down` and `status` work from that file in
any later process. Once every component is ready, `up` starts a supervisor (rtvol/supervisor.py,
its pid in stack.json) that restarts a component that dies; `down` stops it first.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from rtvol import localproc, shm
from rtvol.tls import ClientTLS

STATE = "stack.json"


@dataclass(frozen=True)
class Ports:
    """The default ports (docs/ARCHITECTURE.md, processes and ports); ``from_base`` and ``free``
    for side-by-side stacks and tests."""

    redis: int = 6379
    feature: int = 50052
    feature_metrics: int = 9102
    model: int = 8001
    model_metrics: int = 8002
    gateway: int = 8080
    gateway_grpc: int = 50051
    feature_stream: int = 50053  # the framed Ingest stream (`rtvol feed --transport stream`)

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
    restarts: int = 0  # by the supervisor
    tls: dict[str, str] | None = None  # ClientTLS fields: how a probe reaches a TLS listener

    def check(self) -> bool:
        client = ClientTLS(**self.tls) if self.tls else None
        probe = {"redis": lambda: localproc.redis_ready(self.port),
                 "grpc": lambda: localproc.grpc_ready(self.target, client),
                 "http": lambda: localproc.http_ready(self.target + "/readyz", client)}[self.health]()
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


def feature_args(port: int, metrics_port: int, redis_url: str, stocks: int, *extra: str) -> list[str]:
    return ["--port", str(port), "--metrics-port", str(metrics_port), "--redis-url", redis_url,
            "--stocks", str(stocks), *extra]


def feature_cmd(port: int, metrics_port: int, redis_url: str, stocks: int, *extra: str) -> list[str]:
    return serve("feature", *feature_args(port, metrics_port, redis_url, stocks, *extra))


def sidecar_cmd(port: int, metrics_port: int, repo: Path, *extra: str) -> list[str]:
    return serve("model", "--port", str(port), "--metrics-port", str(metrics_port),
                 "--model-repository", str(repo), *extra)


def gateway_args(port: int, grpc_port: int, repo: Path, *extra: str) -> list[str]:
    return ["--port", str(port), "--grpc-port", str(grpc_port), "--model-repository", str(repo), *extra]


def gateway_cmd(port: int, grpc_port: int, repo: Path, *extra: str) -> list[str]:
    return serve("gateway", *gateway_args(port, grpc_port, repo, *extra))


def embedded_cmd(feature: list[str], gateway: list[str]) -> list[str]:
    """Feature service and gateway in one process; "--gateway" is services/embedded.py's SEPARATOR."""
    return serve("embedded", *feature, "--gateway", *gateway)


# ---- up / down / status ----------------------------------------------------------------------

class StackError(Exception):
    """The stack could not be brought up (or is already up): a user-facing message."""


def load(run_dir: Path) -> list[Component]:
    return [Component(**c) for c in _document(run_dir).get("components", [])]


def _document(run_dir: Path) -> dict[str, Any]:
    path = run_dir / STATE
    return dict(json.loads(path.read_text())) if path.exists() else {}


def _write(run_dir: Path, doc: dict[str, Any]) -> None:
    tmp = run_dir / (STATE + ".tmp")  # whole or not at all: `status` may read it meanwhile
    tmp.write_text(json.dumps(doc, indent=2))
    tmp.replace(run_dir / STATE)


def _save(run_dir: Path, comps: list[Component], ports: Ports) -> None:
    _write(run_dir, {"ports": asdict(ports), "started": time.time(),
                     "components": [asdict(c) for c in comps]})


def update(run_dir: Path, comps: list[Component]) -> None:
    """Components' new pids and restart counts (the supervisor); the rest stays."""
    _write(run_dir, _document(run_dir) | {"components": [asdict(c) for c in comps]})


def supervisor(run_dir: Path) -> int | None:
    """The supervisor's pid while it runs (a reused pid running another program is not it)."""
    sup = _document(run_dir).get("supervisor")
    if not sup or not localproc.alive(sup["pid"]) or localproc.executable(sup["pid"]) != sup["executable"]:
        return None
    return int(sup["pid"])


def _supervise(run_dir: Path) -> None:
    with (run_dir / "supervisor.log").open("ab") as out:
        pid = subprocess.Popen([sys.executable, "-m", "rtvol.cli", "supervise", "--run-dir", str(run_dir)],
                               stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               start_new_session=True).pid
    _write(run_dir, _document(run_dir) | {"supervisor": {"pid": pid, "executable": sys.executable}})


def tls_flags(pki: Path) -> tuple[dict[str, list[str]], ClientTLS]:
    """Per component, the flags of a local stack on TLS (rtvol/certs.py makes the files): the
    sidecar and feature service demand client certificates of the local CA (mTLS: the gateway,
    and `rtvol feed --tls-cert`), the gateway serves engines TLS and calls both with its own.
    Also returns what a client (probes, `rtvol feed`, tests) presents."""
    from rtvol import certs

    ca, pairs = certs.local_pki(pki)

    def own(name: str) -> list[str]:
        return ["--tls-cert", pairs[name].cert, "--tls-key", pairs[name].key]
    mtls = ["--tls-client-ca", ca]
    flags = {"feature": [*own("feature"), *mtls], "model": [*own("model"), *mtls],
             "gateway": [*own("gateway"), "--tls-ca", ca]}
    return flags, ClientTLS(ca, pairs["client"].cert, pairs["client"].key)


def up(run_dir: Path, repo: Path, ports: Ports, stocks: int, backend: str = "auto",
       timeout_s: float = 90.0, no_redis: bool = False, tls: bool = False,
       gateway_workers: int = 1) -> list[Component]:
    """Start every component in dependency order, each ready before the next starts.

    Without a redis-server binary (or with ``no_redis``) the feature service and gateway
    share one process and its in-process store (started last: the gateway needs the sidecar).
    ``tls``: a fresh local CA and certificates under ``run_dir/pki``, every listener TLS-only,
    mTLS between the gateway, the feature service and the sidecar (`tls_flags`).
    ``gateway_workers``: 1 by default, unlike a gateway pod's one per core: here every process of
    the stack shares the machine's cores, and each worker infers every changed window itself.
    """
    if any(localproc.alive(c.pid) for c in load(run_dir)):
        raise StackError(f"a stack is already running from {run_dir} (rtvol down first)")
    run_dir.mkdir(parents=True, exist_ok=True)
    comps: list[Component] = []
    procs: list[localproc.Proc] = []
    flags, client = tls_flags(run_dir / "pki") if tls else ({}, None)
    probe_tls = asdict(client) if client else None
    scheme = "https" if tls else "http"

    def start(log_name: str, cmd: list[str], *parts: tuple[str, int, str, str]) -> None:
        """One process serving ``parts`` (name, port, health, target); ready when all answer."""
        log = run_dir / f"{log_name}.log"
        members = [Component(name, 0, port, health, target, cmd, str(log),
                             tls=None if health == "redis" else probe_tls)
                   for name, port, health, target in parts]
        try:
            proc = localproc.Proc(log_name, cmd, log, lambda: all(c.check() for c in members), timeout_s,
                                  detach=True)
        except RuntimeError as e:
            localproc.stop_all(procs)
            raise StackError(str(e)) from e
        procs.append(proc)
        comps.extend(replace(c, pid=proc.pid) for c in members)
        _save(run_dir, comps, ports)  # after each start: a failed `up` still leaves `down` a list

    embedded = no_redis or shutil.which("redis-server") is None
    redis_url = ""
    if not embedded:
        redis_url = f"redis://127.0.0.1:{ports.redis}/0"
        start("redis", redis_cmd(ports.redis, run_dir), ("redis", ports.redis, "redis", redis_url))
    feature, model = f"127.0.0.1:{ports.feature}", f"127.0.0.1:{ports.model}"
    shm_dir = str(shm.local_dir(run_dir))  # big tier-1 batches go through it, not the socket
    feature_part = ("feature", ports.feature, "grpc", feature)
    gateway_part = ("gateway", ports.gateway, "http", f"{scheme}://127.0.0.1:{ports.gateway}")
    features = feature_args(ports.feature, ports.feature_metrics, redis_url, stocks,
                            "--stream-port", str(ports.feature_stream), *flags.get("feature", []))
    gateway = gateway_args(ports.gateway, ports.gateway_grpc, repo, "--redis-url", redis_url,
                           "--model-url", model, "--feature-url", feature, "--stocks", str(stocks),
                           "--model-shm-dir", shm_dir, *flags.get("gateway", []))
    if not embedded:
        start("feature", serve("feature", *features), feature_part)
    start("model", sidecar_cmd(ports.model, ports.model_metrics, repo, "--backend", backend,
                               "--shm-dir", shm_dir, *flags.get("model", [])),
          ("model", ports.model, "grpc", model))
    if embedded:
        start("embedded", embedded_cmd(features, gateway), feature_part, gateway_part)
    else:
        start("gateway", serve("gateway", *gateway, "--workers", str(gateway_workers)), gateway_part)
    _supervise(run_dir)
    return comps


def down(run_dir: Path, timeout_s: float = 15.0) -> dict[str, str]:
    """Stop every component in reverse order; a pid now running another program is left alone."""
    result: dict[str, str] = {}
    sup = supervisor(run_dir)
    if sup is not None:
        result["supervisor"] = localproc.terminate(sup, 5.0)  # first: it would restart the rest
    stopped: dict[int, str] = {}  # pid -> the component it was stopped for
    for c in reversed(load(run_dir)):
        if c.pid in stopped:  # one process serving several components (embedded)
            result[c.name] = f"stopped with {stopped[c.pid]} (one process)"
            continue
        if localproc.alive(c.pid) and localproc.executable(c.pid) != c.cmd[0]:
            result[c.name] = "gone (pid reused by another process)"
            continue
        result[c.name] = localproc.terminate(c.pid, timeout_s)
        stopped[c.pid] = c.name
    (run_dir / STATE).unlink(missing_ok=True)
    shm.remove_local_dir(run_dir)
    return result


def status(run_dir: Path) -> list[tuple[Component, bool, bool]]:
    """(component, running, healthy) for each component of the recorded stack."""
    out = []
    for c in load(run_dir):
        running = localproc.alive(c.pid)
        out.append((c, running, running and c.check()))
    return out
