"""A stock NVIDIA tritonserver as the gateway's tier 1: the real binary (PyPI's nvidia-pytriton
build, unpacked by `make tritonserver`) serving our exported repository, a real gateway,
feature service and redis-server. The model runs in Triton's Python backend (ONNX Runtime on
our model.onnx; tests/helpers/triton.py says why), so tier-1 answers must equal ONNX Runtime's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import onnxruntime as ort
import pytest
from helpers import feed, procs, triton
from helpers.models import MODEL
from helpers.store import stored_windows

from rtvol.repository import MODEL_FILE, version_dir
from rtvol.training.synth import TINY

pytestmark = pytest.mark.integration
STOCKS = 8


@pytest.fixture(scope="module")
def tritonserver(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """tritonserver on our repository (every model's latest version with all its extra files);
    its gRPC target once every model is ready."""
    if why := triton.unusable():
        pytest.skip(why)
    work = tmp_path_factory.mktemp("triton")
    assert MODEL in triton.python_backend_repo(tiny_repo, work / "models")
    proc, target = triton.tritonserver(work, work / "models")
    try:
        yield target
    finally:
        assert proc.stop() == 0, proc.tail()


def test_gateway_answers_tier_1_from_tritonserver(tritonserver: str, redis_db: str, tiny_repo: Path,
                                                  tiny_data: Path, tmp_path: Path) -> None:
    # the per-deployment tier-1 budget: generous, as for a Triton on a CPU (docs/DEPLOY.md)
    with procs.pipeline_stack(tmp_path, redis_db, tiny_repo, STOCKS, model_url=tritonserver) as (
            feature_url, base, _grpc, gw):
        feed.replay(feature_url, tiny_data, range(0, 3))
        http = httpx.Client(base_url=base, timeout=10)
        ids = list(range(TINY.stocks))  # every stock of the tiny data has a window
        reply = http.post("/v1/predict", json={"stock_ids": ids})
        assert reply.status_code == 200, reply.text
        signals = reply.json()["signals"]
        session = ort.InferenceSession(str(version_dir(tiny_repo, MODEL) / MODEL_FILE))
        want_rv, want_dir, want_mom = session.run(["rv", "direction", "momentum"],
                                                  {"window": stored_windows(redis_db, ids)})
        for i, sig in enumerate(signals):
            assert sig["stock_id"] == ids[i] and sig["tier"] == 1, (sig, gw.tail(2000))
            assert sig["model"] == MODEL and sig["version"] == "1"
            assert sig["rv"] == pytest.approx(float(want_rv[i, 0]), rel=1e-5)
            direction = [sig["direction"][k] for k in ("down", "flat", "up")]
            assert direction == pytest.approx(want_dir[i], abs=1e-5)
            assert sig["momentum"] == pytest.approx(float(want_mom[i, 0]), abs=1e-5)
        # Triton's ModelReady is the gateway's readiness probe, and its breaker stayed closed
        assert http.get("/readyz").json() == {"ready": True, "tier": 1, "reason": "sidecar ready"}
