"""The served ensemble through the real sidecar process: one request, one model, the
python ensemble's answer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

tc = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is the acceptance client")
from helpers.ensembles import TinyEnsemble, tiny_ensemble  # noqa: E402
from test_sidecar_grpc import make_input, wait_ready  # noqa: E402

from rtvol import repository  # noqa: E402
from rtvol.loadtest.bench.launch import Sidecar  # noqa: E402
from rtvol.training import ensemble, export  # noqa: E402
from rtvol.training.cnn import OUTPUTS  # noqa: E402

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def served(tiny_data: Path, tiny_repo: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, TinyEnsemble]]:
    tiny = tiny_ensemble(tiny_data, tiny_repo)
    repo = tmp_path_factory.mktemp("ensemble-repo")
    repository.write_version(repo, ensemble.MODEL, tiny.onnx, {}, export.SERVING)
    proc = Sidecar(repo, ["--backend", "onnxruntime-cpu"])
    try:
        wait_ready(proc.url)
        yield proc.url, tiny
    finally:
        assert proc.stop() == 0


@pytest.mark.parametrize("rows", [1, 7, 160])
def test_sidecar_serves_the_python_ensemble(served: tuple[str, TinyEnsemble], rows: int) -> None:
    url, tiny = served
    client = tc.InferenceServerClient(url)
    pick = np.random.default_rng(rows).choice(len(tiny.windows), size=rows, replace=False)
    result = client.infer(ensemble.MODEL, [make_input(tiny.windows[pick])],
                          outputs=[tc.InferRequestedOutput(o) for o in OUTPUTS])
    np.testing.assert_allclose(result.as_numpy("rv")[:, 0], tiny.rv[pick], rtol=1e-5)
    for head in OUTPUTS[1:]:
        np.testing.assert_allclose(result.as_numpy(head), tiny.cnn[head][pick], atol=1e-5)
    meta = client.get_model_metadata(ensemble.MODEL, as_json=True)
    assert [o["name"] for o in meta["outputs"]] == list(OUTPUTS)
