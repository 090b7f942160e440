"""The sidecar's shadow version yields to served work, against a real sidecar process: a
shadow batch is computed in slices, pauses while a served request is queued or computing
(counted), and is dropped (counted, UNAVAILABLE) when served work outlasts the pause allowed;
the sliced answer equals the whole batch's. Every backend call is slowed (--debug-delay-ms) so
that a slice lasts long enough for served requests to arrive during it on a busy machine."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

tc = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is the acceptance client")
import tritonclient.grpc.aio as tc_aio  # noqa: E402  (after the importorskip)
from helpers.metrics import total  # noqa: E402
from helpers.models import MODEL, export_random  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from rtvol import cli  # noqa: E402
from rtvol.loadtest.bench.launch import Sidecar  # noqa: E402
from rtvol.localproc import free_port  # noqa: E402
from rtvol.repository import version_dir  # noqa: E402
from rtvol.training.cnn import OUTPUTS  # noqa: E402

pytestmark = pytest.mark.integration
SLICE = 16
DELAY_MS = 40  # every backend call: a shadow slice lasts at least this long
SERVED_ROWS = 16  # above --inline-max-rows: computed on the backend thread, the event loop stays free


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("shadow_slices")
    assert (export_random(path, 1), export_random(path, 2)) == (1, 2)
    assert cli.main(["promote", MODEL, "1", "--repo", str(path)]) == 0
    assert cli.main(["shadow", MODEL, "2", "--repo", str(path)]) == 0
    return path


def _sidecar(repo: Path, max_pause_ms: float) -> Iterator[tuple[str, str]]:
    metrics_port = free_port()
    proc = Sidecar(repo, ["--poll-seconds", "0", "--debug-delay-ms", str(DELAY_MS), "--shadow-slice-rows",
                          str(SLICE), "--shadow-max-pause-ms", str(max_pause_ms)], metrics_port=metrics_port)
    try:
        client = tc.InferenceServerClient(proc.url)
        deadline = time.monotonic() + 60
        while not client.is_model_ready(MODEL, "2"):
            assert time.monotonic() < deadline, "sidecar not ready in 60 s"
            time.sleep(0.05)
        yield proc.url, f"http://127.0.0.1:{metrics_port}"
    finally:
        assert proc.stop() == 0


@pytest.fixture(scope="module")
def patient(repo: Path) -> Iterator[tuple[str, str]]:
    """Pauses up to 10 s: served work never outlasts it here."""
    yield from _sidecar(repo, 10_000)


@pytest.fixture(scope="module")
def impatient(repo: Path) -> Iterator[tuple[str, str]]:
    """Pauses 5 ms at most: an eighth of a served call, so a slice boundary that finds a served
    call running almost always waits longer than that."""
    yield from _sidecar(repo, 5)


def _windows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).lognormal(-6, 1, size=(n, 50, 12)).astype(np.float32)


def _input(x: np.ndarray) -> tc.InferInput:
    inp = tc.InferInput("window", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return inp




async def _shadow_while_served(url: str, shadow_rows: int) -> tuple[Any, list[np.ndarray], np.ndarray]:
    """One shadow batch of ``shadow_rows``; while it runs, served requests back to back until it
    is answered. Returns (the shadow's result or exception, the served rv answers, the shadow input)."""
    client = tc_aio.InferenceServerClient(url)
    x = _windows(shadow_rows, 1)
    try:
        shadow = asyncio.ensure_future(client.infer(MODEL, [_input(x)], model_version="2"))
        await asyncio.sleep(DELAY_MS / 2000)  # the first slice is computing
        served = []
        while not shadow.done():
            result = await client.infer(MODEL, [_input(_windows(SERVED_ROWS, len(served) + 2))])
            served.append(result.as_numpy("rv"))
        try:
            outcome: Any = shadow.result()
        except InferenceServerException as e:
            outcome = e
        return outcome, served, x
    finally:
        await client.close()


def test_shadow_pauses_for_served_work_and_its_slices_add_up(repo: Path, patient: tuple[str, str]) -> None:
    url, metrics = patient
    paused = total(metrics, "rtvol_model_shadow_paused_total")
    outcome, served, x = asyncio.run(_shadow_while_served(url, 8 * SLICE))
    assert not isinstance(outcome, Exception), outcome
    assert served, "no served request ran while the shadow batch did"
    assert total(metrics, "rtvol_model_shadow_paused_total") > paused  # it waited for them
    assert total(metrics, "rtvol_model_shadow_dropped_rows_total") == 0
    session = ort.InferenceSession(str(version_dir(repo, MODEL, 2) / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    want = dict(zip(OUTPUTS, session.run(list(OUTPUTS), {"window": x}), strict=True))
    for name in OUTPUTS:  # sliced, the shadow's answer is the whole batch's
        np.testing.assert_allclose(outcome.as_numpy(name), want[name], rtol=1e-5, atol=1e-6)


def test_shadow_is_dropped_when_served_work_outlasts_the_pause(impatient: tuple[str, str]) -> None:
    url, metrics = impatient
    outcome, served, _ = asyncio.run(_shadow_while_served(url, 8 * SLICE))
    assert isinstance(outcome, InferenceServerException), outcome
    assert "shadow batch dropped" in str(outcome)
    assert served
    assert total(metrics, "rtvol_model_shadow_dropped_rows_total") > 0
    assert total(metrics, "rtvol_model_request_failures_total") >= 1  # counted as a failed request
