"""redis-server layouts beyond the plain one in procs.redis: a Unix socket beside TCP, and a
real Redis Cluster of three masters. Every wait is bounded; ``stop`` ends what was started.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from rtvol import stack
from rtvol.localproc import Proc, free_port, redis_ready, stop_all

T = TypeVar("T")


def with_retries(start: Callable[[int], T], attempts: int = 3) -> T:
    """``start(attempt)`` until it does not raise RuntimeError: a free port can be taken
    between probing it and redis-server binding it."""
    for attempt in range(attempts - 1):
        try:
            return start(attempt)
        except RuntimeError:
            continue
    return start(attempts - 1)


def unix(workdir: Path, *extra: str) -> tuple[Proc, str, str]:
    """redis-server on a free loopback port and on ``workdir/redis.sock``: (process, TCP URL, Unix URL)."""
    port, sock = free_port(), workdir / "redis.sock"
    cmd = [*stack.redis_cmd(port, workdir), "--unixsocket", str(sock), "--unixsocketperm", "700", *extra]
    proc = Proc("redis-server (unix socket)", cmd, workdir / "redis.log",
                lambda: _answers(port) and sock.exists(), timeout_s=10)
    return proc, f"redis://127.0.0.1:{port}/0", f"unix://{sock}"


def _answers(port: int) -> bool:
    """PING answered, with PONG or (a server with a password) NOAUTH."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


@dataclass
class Cluster:
    """Three masters, no replicas, all 16,384 slots assigned; ``url`` names one node."""

    workdir: Path
    masters: int = 3
    timeout_s: float = 60.0
    ports: list[int] = field(default_factory=list)
    nodes: list[Proc] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def start(self) -> Cluster:
        try:
            for i in range(self.masters):
                # the bus port is set too: port + 10000 (the default) may not be a valid port
                port, bus = free_port(), free_port()
                node_dir = self.workdir / f"node-{i}"
                node_dir.mkdir(parents=True, exist_ok=True)
                cmd = [*stack.redis_cmd(port, node_dir), "--cluster-enabled", "yes",
                       "--cluster-config-file", str(node_dir / "nodes.conf"), "--cluster-port", str(bus),
                       "--cluster-node-timeout", "5000"]
                self.nodes.append(Proc(f"redis cluster node {i}", cmd, node_dir / "redis.log",
                                       redis_ready(port), timeout_s=10))
                self.ports.append(port)
            self._create()
        except BaseException:
            self.stop()
            raise
        return self

    def _create(self) -> None:
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli not installed")
        created = subprocess.run([cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
                                  "--cluster-replicas", "0", "--cluster-yes"],
                                 capture_output=True, text=True, timeout=self.timeout_s)
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{created.stdout}\n{created.stderr}")
        deadline = time.monotonic() + self.timeout_s
        while not all(self._state_ok(p) for p in self.ports):
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster_state not ok on every node within {self.timeout_s} s")
            time.sleep(0.1)

    @staticmethod
    def _state_ok(port: int) -> bool:
        import redis

        with redis.Redis(port=port, socket_timeout=1) as r:
            try:
                return bool(r.cluster("INFO")["cluster_state"] == "ok")
            except redis.RedisError:
                return False

    def stop(self) -> None:
        stop_all(self.nodes, timeout_s=10)
