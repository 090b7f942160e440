"""rtvol.localproc: stopping a group of processes never leaves one running; free ports."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from rtvol import localproc


def _sleeper(tmp_path: Path, name: str) -> localproc.Proc:
    return localproc.Proc(name, [sys.executable, "-c", "import time; time.sleep(60)"],
                          tmp_path / f"{name}.log", lambda: True, timeout_s=5)


def test_stop_all_stops_every_process_even_when_one_fails_to_stop(tmp_path: Path) -> None:
    first, broken, last = (_sleeper(tmp_path, n) for n in ("first", "broken", "last"))

    def fails(timeout_s: float = 15.0) -> int:
        raise RuntimeError("could not stop")

    broken.stop = fails  # type: ignore[method-assign]
    try:
        with pytest.raises(RuntimeError, match="could not stop"):
            localproc.stop_all([first, broken, last], timeout_s=5)
        # stopped in reverse order around the failure: both others are gone
        assert first.proc is not None and first.proc.poll() is not None
        assert last.proc is not None and last.proc.poll() is not None
    finally:
        broken.kill()
        first.kill()
        last.kill()


def test_stop_all_returns_each_exit_code(tmp_path: Path) -> None:
    procs = [_sleeper(tmp_path, "a"), _sleeper(tmp_path, "b")]
    assert localproc.stop_all(procs, timeout_s=5) == {"b": -15, "a": -15}  # SIGTERM, default handler


def test_free_ports_are_distinct_bindable_and_below_the_ephemeral_range() -> None:
    """A port the kernel picks (bind to 0) can be taken as an outgoing connection's source
    port before the server binds it; these cannot."""
    ports = [localproc.free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(1024 <= p < localproc.EPHEMERAL_LOW for p in ports)
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[-1]))
