"""Shared fixtures: one tiny synthetic dataset (and a model trained on it) per session."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from training import synth


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny")
    synth.write(synth.generate(synth.TINY), out)
    return out


@pytest.fixture(scope="session")
def tiny_repo(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository with one version trained for a few epochs on the tiny data."""
    import torch

    from training import dataset, train

    torch.set_num_threads(1)
    repo = tmp_path_factory.mktemp("models")
    train.run(dataset.load(tiny_data, progress=False), repo, train.TrainConfig(epochs=3),
              progress=False)
    return repo


def _free_port() -> int:
    """A TCP port on loopback that was free a moment ago (bind to port 0, then release)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def free_port() -> Callable[[], int]:
    """Call it for a free loopback TCP port (there is a small race until you bind it)."""
    return _free_port


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a free loopback port for the session; yields its URL.

    No persistence; tests that share it use their own keys (or FLUSHDB). Skips with a reason
    when the binary is absent (`make test` installs the Debian package redis-server).
    """
    import shutil
    import subprocess
    import time

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not installed (apt-get install redis-server, or `make system-deps`)")
    workdir = tmp_path_factory.mktemp("redis")
    for _attempt in range(3):  # the free port can be taken between probe and bind
        port = _free_port()
        proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", str(workdir)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if _wait_for_port(port, proc, deadline=time.monotonic() + 10):
            break
        proc.kill()
        proc.wait()
    else:
        pytest.fail("redis-server did not start on a free port in 3 attempts")
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], deadline: float) -> bool:
    import socket
    import time

    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return True
        except OSError:
            time.sleep(0.05)
    return False
