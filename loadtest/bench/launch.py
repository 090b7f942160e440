"""Start the sidecar as a child process on a free loopback port (tests and the benchmark:
tritonclient registers its own `inference.*` protos, so it never shares a process with
ours)."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path


class Child:
    """A server process that prints '... listening on HOST:PORT' once bound."""

    def __init__(self, cmd: Sequence[str], timeout_s: float = 60.0, env: dict[str, str] | None = None
                 ) -> None:
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, **(env or {})})
        self.output: list[str] = []
        self.port = self._read_port(timeout_s)
        self.url = f"127.0.0.1:{self.port}"

    def _read_port(self, timeout_s: float) -> int:
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline, seen = time.monotonic() + timeout_s, []
        while time.monotonic() < deadline:
            if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                break
            line = self.proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if "listening on" in line:
                # keep draining: a full pipe would block the child's next log line
                threading.Thread(target=self._drain, daemon=True).start()
                return int(line.rsplit(":", 1)[1])
        self.stop()
        raise RuntimeError("sidecar did not start:\n" + "".join(seen))

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            del self.output[:-200]

    def stop(self, timeout_s: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


class Sidecar(Child):
    def __init__(self, repo: Path, args: Sequence[str] = (), metrics_port: int = 0,
                 timeout_s: float = 60.0, env: dict[str, str] | None = None) -> None:
        super().__init__([sys.executable, "-m", "rtvol.services.model.main", "--port", "0",
                          "--metrics-port", str(metrics_port), "--model-repository", str(repo), *args],
                         timeout_s, env)


class Echo(Child):
    def __init__(self, timeout_s: float = 30.0) -> None:
        super().__init__([sys.executable, "-m", "rtvol.loadtest.bench.echo_grpc"], timeout_s)
