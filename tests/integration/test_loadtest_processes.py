"""`rtvol loadtest --processes 2` against a real gateway (redis-server, feature service, sidecar):
the schedule sent by two generator processes is answered in full and reported as one run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import feed, procs

from rtvol.loadtest import run

pytestmark = pytest.mark.integration
STOCKS = 8
FED = list(range(4))  # the stocks the tiny data has (synth.TINY): every one has a window
RATE, SECONDS = 100.0, 2.0


@pytest.fixture(scope="module")
def targets(redis_db: str, tiny_repo: Path, tiny_data: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    logs = tmp_path_factory.mktemp("loadtest_processes")
    with procs.pipeline_stack(logs, redis_db, tiny_repo, STOCKS) as (feature_url, base, grpc_target, _):
        feed.replay(feature_url, tiny_data, range(0, 3))
        yield f"grpc://{grpc_target}", base


@pytest.mark.parametrize("api", ["grpc", "http"])
def test_two_generator_processes_send_the_whole_schedule(targets: tuple[str, str], api: str,
                                                         tmp_path: Path) -> None:
    target = targets[0] if api == "grpc" else targets[1]
    plan = run.Plan(target, SECONDS, FED, timeout_s=10.0, grpc_connections=2, processes=2)
    s = run.once(plan, RATE, tmp_path)
    assert s["errors"] == {} and s["ok"] == s["scheduled"] == RATE * SECONDS, s
    assert s["generator"]["processes"] == 2 and s["generator"]["cpu_us_per_request"] > 0
    assert s["latency_ms"]["p50"] > 0
    assert (tmp_path / "report.json").exists() and (tmp_path / "percentile_spectrum.png").exists()
