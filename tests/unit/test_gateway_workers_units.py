"""The worker count (rtvol/cpus.py) and the gateway's multiprocess metrics files
(services/gateway/multiproc.py); the supervisor itself runs in
tests/integration/test_gateway_workers.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rtvol import cpus
from rtvol.services.gateway import multiproc, signaltable, workers
from rtvol.services.gateway.settings import GatewaySettings


@pytest.mark.parametrize(("cpu_max", "want"), [("max 100000", None), ("150000 100000", 1.5),
                                                ("200000 100000", 2.0)])
def test_the_cgroup_v2_limit_is_quota_over_period(tmp_path: Path, cpu_max: str, want: float | None) -> None:
    (tmp_path / "cpu.max").write_text(cpu_max + "\n")
    assert cpus.cgroup_limit(tmp_path) == want


def test_the_cgroup_v1_limit_and_none_where_unknown(tmp_path: Path) -> None:
    assert cpus.cgroup_limit(tmp_path) is None
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cpus.cgroup_limit(tmp_path) is None
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    assert cpus.cgroup_limit(tmp_path) == 0.5


def test_available_cores_are_the_affinity_capped_by_the_limit_rounded_up(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    assert cpus.available(tmp_path) == affinity  # no limit
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert cpus.available(tmp_path) == 1  # half a core is still one worker
    (tmp_path / "cpu.max").write_text(f"{(affinity + 8) * 100000} 100000\n")
    assert cpus.available(tmp_path) == affinity  # a limit above the cores given changes nothing


def test_workers_zero_means_the_cores_and_a_number_is_kept() -> None:
    assert workers.count(GatewaySettings(workers=3)) == 3
    assert workers.count(GatewaySettings(workers=0)) == cpus.available()


def test_workers_zero_means_one_process_where_workers_cannot_share_signals(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("platform.machine", lambda: "aarch64")
    assert workers.count(GatewaySettings(workers=0)) == 1  # the default starts (one process)
    assert workers.count(GatewaySettings(workers=3)) == 3  # asked for: refused at start, as before
    with pytest.raises(SystemExit, match="x86-64"):
        signaltable.create(8)


def test_clean_empties_the_metrics_directory_and_the_totals_find_live_pids(tmp_path: Path) -> None:
    d = tmp_path / "metrics"
    d.mkdir()
    (d / "counter_999999999.db").write_bytes(b"old")
    multiproc.clean(d)
    assert list(d.iterdir()) == []
    (d / f"counter_{os.getpid()}.db").write_bytes(b"")
    (d / "histogram_999999999.db").write_bytes(b"")  # a pid that is not running
    totals = multiproc.ProcessTotals(d)
    assert totals.pids() == {os.getpid(), 999999999}
    cpu, rss = list(totals.collect())
    assert cpu.samples[0].value > 0 and rss.samples[0].value > 0  # only this process counted
