"""Which process holds which TCP socket (/proc): where a gateway's workers took connections."""

from __future__ import annotations

import os
from pathlib import Path

ESTABLISHED, LISTEN = "01", "0A"  # /proc/net/tcp states


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def held(pid: int, port: int, state: str = ESTABLISHED) -> int:
    """TCP sockets of process ``pid`` in ``state`` whose local port is ``port``."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == state:
                inodes.add(fields[9])
    try:
        links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
    except OSError:  # gone
        return 0
    return sum(1 for link in links if link.startswith("socket:[") and link[8:-1] in inodes)


def all_listen(parent: int, workers: int, port: int) -> bool:
    """``workers`` children of ``parent`` each listen on ``port`` (a worker listens once warm)."""
    pids = children(parent)
    return len(pids) == workers and all(held(pid, port, LISTEN) for pid in pids)
