"""Local child processes with bounded readiness waits and bounded shutdown.

Shared by `rtvol up` and the integration tests: both start services as command lines on
loopback ports and wait (with a deadline) until each answers its health check.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from rtvol import tls
from rtvol.tls import ClientTLS

Check = Callable[[], bool]


def _ephemeral_low(path: str = "/proc/sys/net/ipv4/ip_local_port_range") -> int:
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


EPHEMERAL_LOW = _ephemeral_low()
_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port on loopback that was free a moment ago, never the same one twice in this
    process, and below the kernel's ephemeral range: a port the kernel chose (bind to 0, then
    release) could be taken meanwhile as the source port of any outgoing connection or by
    another process's bind to 0 (seen: a test's gateway then failed with "Address already in
    use")."""
    below = range(max(1024, EPHEMERAL_LOW - 20_000), EPHEMERAL_LOW)
    for _ in range(1000 if len(below) >= 1000 else 0):  # else: the kernel's choice, as before
        port = random.choice(below)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Check, timeout_s: float, interval_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval_s)
    return False


class Proc:
    """A child process restarted with the same command (and so the same ports)."""

    def __init__(self, name: str, cmd: Sequence[str], log: Path, ready: Check,
                 timeout_s: float = 60.0, detach: bool = False) -> None:
        self.name, self.cmd, self.log, self.ready, self.timeout_s = name, list(cmd), log, ready, timeout_s
        self.detach = detach  # own session: survives the launcher and its terminal's Ctrl-C
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=self.detach)
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


def stop_all(procs: Sequence[Proc], timeout_s: float = 15.0) -> dict[str, int]:
    """Stop ``procs`` in reverse start order and return each one's exit code by name.

    Every process is stopped even when stopping another raises; the first such error is
    raised once all have been dealt with, so a failed stop never leaves the rest running."""
    codes: dict[str, int] = {}
    errors: list[BaseException] = []
    for p in reversed(procs):
        try:
            codes[p.name] = p.stop(timeout_s)
        except BaseException as e:  # raised once the others are stopped too
            errors.append(e)
    if errors:
        raise errors[0]
    return codes


# ---- processes known only by pid (started by an earlier `rtvol up`) ----------------------

def alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie counts as gone (it only waits to be reaped)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our own child: reap it
            return False
    except ChildProcessError:
        pass
    fields = stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat from the state on (the command name, which may hold spaces, cut off):
    fields[0] is the state, [11] and [12] user and system CPU in clock ticks, [21] resident
    pages. None when the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def cpu_seconds(fields: list[str]) -> float:
    """User + system CPU of a process, from its `stat_fields`."""
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def executable(pid: int) -> str:
    """The program a pid runs, as its command line names it ('' when gone).

    Only the first word: redis-server rewrites the rest of its command line.
    """
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""
    return raw.split("\0")[0].split(" ")[0]


def terminate(pid: int, timeout_s: float = 15.0) -> str:
    """SIGTERM, wait up to ``timeout_s``, then SIGKILL: 'gone', 'terminated' or 'killed'."""
    if not alive(pid):
        return "gone"
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return "gone"
    if wait_until(lambda: not alive(pid), timeout_s):
        return "terminated"
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return "terminated"
    wait_until(lambda: not alive(pid), 5.0)
    return "killed"


# ---- readiness checks ---------------------------------------------------------------------

def grpc_ready(target: str, client_tls: ClientTLS | None = None) -> Check:
    def check() -> bool:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with tls.sync_channel(target, client_tls) as ch:
            try:
                reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=0.5)
            except grpc.RpcError:
                return False
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
    return check


def http_ready(url: str, client_tls: ClientTLS | None = None) -> Check:
    def check() -> bool:
        import httpx

        try:
            return httpx.get(url, timeout=0.5, verify=client_tls.ssl_context() if client_tls else True
                             ).status_code == 200
        except httpx.HTTPError:
            return False
    return check


def redis_ready(port: int) -> Check:
    def check() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False
    return check
