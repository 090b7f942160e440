"""Gateway metrics across worker processes (services/gateway/workers.py).

With PROMETHEUS_MULTIPROC_DIR set (the supervisor sets it for its workers), every worker
writes its metric values to files there; a scrape of any worker, or of the supervisor's
metrics port, reads them all: counters and histograms sum over workers (a dead worker's
counts stay), gauges follow their ``multiprocess_mode`` (metrics.py). process_cpu_seconds_total
and process_resident_memory_bytes, which prometheus-client keeps per process, are summed over
the live workers here, so the runtime dashboard shows the whole gateway. Without the variable
(one process) /metrics is prometheus-client's default registry, as before.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from rtvol import localproc

ENV = "PROMETHEUS_MULTIPROC_DIR"
_PID = re.compile(r"_(\d+)\.db$")


def clean(directory: Path) -> None:
    """Create ``directory``, or empty it of a previous run's files."""
    directory.mkdir(parents=True, exist_ok=True)
    for f in directory.glob("*.db"):
        f.unlink(missing_ok=True)


def mark_dead(directory: Path, pid: int) -> None:
    """A worker has exited: its live-mode gauges leave the sums."""
    mark_process_dead(pid, str(directory))


class ProcessTotals(Collector):
    """CPU and resident memory of the live processes that have written metrics in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.page = os.sysconf("SC_PAGE_SIZE")

    def pids(self) -> set[int]:
        return {int(m.group(1)) for f in self.directory.glob("*.db") if (m := _PID.search(f.name))}

    def collect(self) -> Iterator[Metric]:
        cpu_s = rss = 0.0
        for pid in self.pids():
            fields = localproc.stat_fields(pid)
            if fields is None:  # exited
                continue
            cpu_s += localproc.cpu_seconds(fields)
            rss += int(fields[21]) * self.page
        yield CounterMetricFamily("process_cpu_seconds", "User and system CPU time of the live gateway "
                                  "workers, in seconds", value=cpu_s)
        yield GaugeMetricFamily("process_resident_memory_bytes", "Resident memory of the live gateway "
                                "workers, in bytes", value=rss)


def registry(directory: Path) -> CollectorRegistry:
    reg = CollectorRegistry()
    MultiProcessCollector(reg, str(directory))
    reg.register(ProcessTotals(directory))
    return reg


@functools.cache
def _shared() -> CollectorRegistry | None:
    directory = os.environ.get(ENV)
    return registry(Path(directory)) if directory else None


def exposition() -> bytes:
    """/metrics: every worker's metrics when there are workers, else this process's."""
    shared = _shared()
    return generate_latest(shared) if shared is not None else generate_latest()
