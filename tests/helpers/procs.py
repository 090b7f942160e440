"""Real service processes for integration tests: redis-server, feature service, model
sidecar and gateway, each on a loopback port, with its output in a log file.

Every wait is bounded; a process that does not come up fails the test with its log tail.
A process keeps its port across ``kill``/``restart``, so clients reconnect to the same address.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path


def free_port() -> int:
    """A TCP port on loopback that was free a moment ago (bind to port 0, then release)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], bool], timeout_s: float, interval_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval_s)
    return False


class Proc:
    """A child process restarted with the same command (and so the same ports)."""

    def __init__(self, name: str, cmd: Sequence[str], log: Path, ready: Callable[[], bool],
                 timeout_s: float = 60.0) -> None:
        self.name, self.cmd, self.log, self.ready, self.timeout_s = name, list(cmd), log, ready, timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT)
        if not wait_until(lambda: self.proc is not None and self.proc.poll() is None and self.ready(),
                          self.timeout_s):
            self.kill()
            raise RuntimeError(f"{self.name} did not become ready:\n{self.tail()}")

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no drain, no goodbye (a crash)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout_s: float = 15.0) -> int:
        """SIGTERM and wait (graceful drain); SIGKILL after ``timeout_s``. Returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        return int(self.proc.returncode)

    restart = start


def grpc_ready(target: str) -> Callable[[], bool]:
    def check() -> bool:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(target) as ch:
            try:
                reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=0.5)
            except grpc.RpcError:
                return False
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
    return check


def http_ready(url: str) -> Callable[[], bool]:
    def check() -> bool:
        import httpx

        try:
            return httpx.get(url, timeout=0.5).status_code == 200
        except httpx.HTTPError:
            return False
    return check


def redis_ready(port: int) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False
    return check


def redis(workdir: Path, port: int | None = None) -> Proc:
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server not installed (apt-get install redis-server)")
    port = port or free_port()
    proc = Proc("redis-server", [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", str(workdir)],
                workdir / "redis.log", redis_ready(port), timeout_s=10)
    proc.url = f"redis://127.0.0.1:{port}/0"  # type: ignore[attr-defined]
    return proc


def _rtvol(*args: str) -> list[str]:
    return [sys.executable, "-m", "rtvol.cli", "serve", *args]


def feature_service(log_dir: Path, redis_url: str, stocks: int, *extra: str,
                    port: int | None = None) -> tuple[Proc, str]:
    port = port or free_port()
    target = f"127.0.0.1:{port}"
    return Proc("feature service", _rtvol("feature", "--port", str(port), "--metrics-port", "0",
                                         "--redis-url", redis_url, "--stocks", str(stocks), *extra),
                log_dir / "feature.log", grpc_ready(target)), target


def sidecar(log_dir: Path, repo: Path, *extra: str, port: int | None = None) -> tuple[Proc, str]:
    port = port or free_port()
    target = f"127.0.0.1:{port}"
    return Proc("model sidecar", _rtvol("model", "--port", str(port), "--metrics-port", "0",
                                       "--model-repository", str(repo), "--poll-seconds", "0", *extra),
                log_dir / "sidecar.log", grpc_ready(target)), target


def gateway(log_dir: Path, repo: Path, *extra: str) -> tuple[Proc, str, str]:
    """(process, http base URL, grpc target)."""
    http, grpc_port = free_port(), free_port()
    base = f"http://127.0.0.1:{http}"
    return Proc("gateway", _rtvol("gateway", "--port", str(http), "--grpc-port", str(grpc_port),
                                 "--model-repository", str(repo), *extra),
                log_dir / "gateway.log", http_ready(base + "/readyz")), base, f"127.0.0.1:{grpc_port}"
