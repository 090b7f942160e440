"""Live accuracy end to end: the synthetic data replayed bucket by bucket through Ingest into
real processes (redis-server, feature service, model sidecar, gateway following the Watch
stream); the gateway's live-RMSPE counters equal the RMSPE computed offline on the same
buckets from the same data.

Tolerance: the two sides score the very same (stock, bucket) pairs (the count must match
exactly), so there is no sampling difference between them; what differs is arithmetic only
(float32 windows built online vs offline, the same ONNX model on the sidecar's ONNX Runtime vs
this process's, a bucket's RV summed per step vs per row): a relative 1e-5 on the RMSPE
(measured: 1e-7).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers import procs

from rtvol.loadtest import live_accuracy
from rtvol.repository import validation_rmspe

pytestmark = pytest.mark.integration
STOCKS = 4  # synth.TINY
BUCKETS = range(0, 40)


@pytest.fixture(scope="module")
def stack(redis_db: str, tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[str, str, str]]:
    # budgets so generous that tier 1 answers every signal: one tier, one signal per bucket
    with procs.pipeline_stack(tmp_path_factory.mktemp("live_accuracy"), redis_db, tiny_repo, STOCKS,
                              "--deadline-ms", "20000", "--model-timeout-ms", "10000",
                              "--model-latency-budget-ms", "10000") as (feature, base, grpc_target, _log):
        yield feature, base, grpc_target


def test_live_rmspe_equals_offline_rmspe_on_the_same_buckets(
        stack: tuple[str, str, str], tiny_data: Path, tiny_repo: Path) -> None:
    feature, base, gateway = stack
    before = httpx.get(base + "/metrics", timeout=10).text
    live_accuracy.replay(feature, gateway, tiny_data, BUCKETS)
    metrics = httpx.get(base + "/metrics", timeout=10).text
    live = live_accuracy.live(before, metrics, "rtvol_cnn")
    want = live_accuracy.offline_score(tiny_data, tiny_repo, "rtvol_cnn", BUCKETS)["next_bucket"]
    assert set(live) == {"1", "all"}, live  # tier 1 only: nothing scored twice
    assert want.signals >= STOCKS * (len(BUCKETS) - 2)  # every stock, (almost) every bucket pair
    assert live["all"].signals == want.signals
    assert live["all"].rmspe == pytest.approx(want.rmspe, rel=1e-5)
    # the served version's validation figure, for the alert to compare with
    validation = validation_rmspe(tiny_repo, "rtvol_cnn", 1)
    assert validation is not None
    assert f'rtvol_model_validation_rmspe{{model="rtvol_cnn",version="1"}} {validation}' in metrics
