"""The model sidecar as a real process, driven by the official tritonclient."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest

tc = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is the acceptance client")
import tritonclient.grpc.aio as tc_aio  # noqa: E402  (after the importorskip)
from helpers.models import MODEL, export_random  # noqa: E402
from tritonclient.grpc import service_pb2, service_pb2_grpc  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from rtvol.loadtest.bench.launch import Sidecar  # noqa: E402
from rtvol.localproc import free_port  # noqa: E402
from rtvol.repository import version_dir  # noqa: E402
from rtvol.training.cnn import OUTPUTS  # noqa: E402

pytestmark = pytest.mark.integration


def wait_ready(url: str, timeout_s: float = 60) -> None:
    client = tc.InferenceServerClient(url)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if client.is_server_ready():
                return
        except InferenceServerException:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"sidecar at {url} not ready in {timeout_s} s")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models")
    export_random(path, seed=3)
    return path


@pytest.fixture(scope="module")
def sidecar(repo: Path) -> Iterator[tuple[str, int]]:
    """(grpc url, metrics port); a 2 ms queue delay so concurrent requests visibly batch."""
    metrics_port = free_port()
    proc = Sidecar(repo, ["--max-queue-delay-us", "2000"], metrics_port=metrics_port)
    try:
        wait_ready(proc.url)
        yield proc.url, metrics_port
    finally:
        assert proc.stop() == 0  # graceful drain on SIGTERM


def windows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).lognormal(-6, 1, size=(n, 50, 12)).astype(np.float32)


def reference(repo: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(version_dir(repo, MODEL) / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    return dict(zip(OUTPUTS, session.run(list(OUTPUTS), {"window": x}), strict=True))


def make_input(x: np.ndarray) -> tc.InferInput:
    inp = tc.InferInput("window", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)  # tritonclient's gRPC client sends raw_input_contents
    return inp


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return str(r.read().decode())


def metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    assert want or total, name
    return total


def test_live_ready_and_metadata(sidecar: tuple[str, int]) -> None:
    client = tc.InferenceServerClient(sidecar[0])
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL)
    assert not client.is_model_ready("nope")
    server = client.get_server_metadata(as_json=True)
    assert "streaming" in server["extensions"]
    meta = client.get_model_metadata(MODEL, as_json=True)
    assert meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "window", "datatype": "FP32", "shape": ["-1", "50", "12"]}]
    assert [o["name"] for o in meta["outputs"]] == list(OUTPUTS)
    config = client.get_model_config(MODEL, as_json=True)["config"]
    assert config["max_batch_size"] == 1024
    assert config["input"][0]["dims"] == ["50", "12"]
    assert "max_queue_delay_microseconds" in config["dynamic_batching"]


def test_infer_raw_contents_matches_onnxruntime(sidecar: tuple[str, int], repo: Path) -> None:
    client = tc.InferenceServerClient(sidecar[0])
    x = windows(5, seed=11)
    result = client.infer(MODEL, [make_input(x)], request_id="r-1",
                          outputs=[tc.InferRequestedOutput(o) for o in ("direction", "rv")])
    want = reference(repo, x)
    assert result.get_response().id == "r-1"
    assert result.get_response().model_version == "1"
    assert [o.name for o in result.get_response().outputs] == ["direction", "rv"]
    for out in ("direction", "rv"):
        np.testing.assert_allclose(result.as_numpy(out), want[out], atol=1e-6, rtol=0)


def test_infer_typed_contents_matches_onnxruntime(sidecar: tuple[str, int], repo: Path) -> None:
    x = windows(2, seed=12)
    request = service_pb2.ModelInferRequest(model_name=MODEL)
    tensor = request.inputs.add(name="window", datatype="FP32", shape=list(x.shape))
    tensor.contents.fp32_contents.extend(x.ravel().tolist())
    with grpc.insecure_channel(sidecar[0]) as channel:
        response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
    rv = np.frombuffer(response.raw_output_contents[0], dtype=np.float32).reshape(2, 1)
    np.testing.assert_allclose(rv, reference(repo, x)["rv"], atol=1e-6, rtol=0)


def test_streaming(sidecar: tuple[str, int], repo: Path) -> None:
    client = tc.InferenceServerClient(sidecar[0])
    results: queue.Queue[tuple[object, object]] = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        xs = {f"s{i}": windows(i + 1, seed=20 + i) for i in range(4)}
        for rid, x in xs.items():
            client.async_stream_infer(MODEL, [make_input(x)], request_id=rid)
        client.async_stream_infer(MODEL, [make_input(windows(1)[:, :, :6])], request_id="bad")
        got, errors = {}, []
        for _ in range(len(xs) + 1):
            result, error = results.get(timeout=30)
            if error is not None:
                errors.append(str(error))
            else:
                got[result.get_response().id] = result.as_numpy("rv")  # type: ignore[attr-defined]
    finally:
        client.stop_stream()
    assert len(errors) == 1 and "shape" in errors[0]  # in-band error; the stream went on
    for rid, x in xs.items():
        np.testing.assert_allclose(got[rid], reference(repo, x)["rv"], atol=1e-6, rtol=0)


def test_streaming_one_at_a_time_then_in_a_burst(sidecar: tuple[str, int], repo: Path) -> None:
    """Answered in the stream's own turn while nothing is in flight (a lone request, an
    in-band error), then concurrently once requests wait for a batch, then one at a time
    again on the same stream: every answer right and under its own id."""
    client = tc.InferenceServerClient(sidecar[0])
    results: queue.Queue[tuple[object, object]] = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put((result, error)))

    def answers(n: int) -> tuple[dict[str, np.ndarray], list[str]]:
        got, errors = {}, []
        for _ in range(n):
            result, error = results.get(timeout=30)
            if error is not None:
                errors.append(str(error))
            else:
                got[result.get_response().id] = result.as_numpy("rv")  # type: ignore[attr-defined]
        return got, errors

    xs = {f"r{i}": windows(1 + i % 3, seed=40 + i) for i in range(14)}
    try:
        alone = [*list(xs)[:3], "bad", *list(xs)[3:5]]
        burst, after = list(xs)[5:12], list(xs)[12:]
        got: dict[str, np.ndarray] = {}
        for rid in alone:  # each waits for its answer: nothing else in flight
            x = windows(1)[:, :, :6] if rid == "bad" else xs[rid]
            client.async_stream_infer(MODEL, [make_input(x)], request_id=rid)
            one, errors = answers(1)
            assert (errors and "shape" in errors[0]) if rid == "bad" else not errors, errors
            got |= one
        for rid in burst:
            client.async_stream_infer(MODEL, [make_input(xs[rid])], request_id=rid)
        many, errors = answers(len(burst))
        assert not errors, errors
        got |= many
        for rid in after:
            client.async_stream_infer(MODEL, [make_input(xs[rid])], request_id=rid)
            one, errors = answers(1)
            assert not errors, errors
            got |= one
    finally:
        client.stop_stream()
    assert sorted(got) == sorted(xs)
    for rid, x in xs.items():
        np.testing.assert_allclose(got[rid], reference(repo, x)["rv"], atol=1e-6, rtol=0)


def _raw_request(x: np.ndarray, **overrides: object) -> service_pb2.ModelInferRequest:
    fields: dict[str, object] = {"name": "window", "datatype": "FP32", "shape": list(x.shape)}
    fields.update({k: v for k, v in overrides.items() if k in fields})
    request = service_pb2.ModelInferRequest(model_name=str(overrides.get("model", MODEL)),
                                            model_version=str(overrides.get("version", "")))
    request.inputs.add(**fields)
    request.raw_input_contents.append(bytes(overrides.get("raw", x.tobytes())))  # type: ignore[call-overload]
    return request


def test_bad_inputs_are_refused_and_the_server_keeps_serving(sidecar: tuple[str, int]) -> None:
    url, metrics_port = sidecar
    x = windows(1)
    nan = x.copy()
    nan[0, 3, 4] = np.nan
    inf = x.copy()
    inf[0, 0, 0] = np.inf
    cases: list[tuple[dict[str, object], grpc.StatusCode, str]] = [
        ({"model": "nope"}, grpc.StatusCode.NOT_FOUND, "unknown model 'nope'"),
        ({"version": "7"}, grpc.StatusCode.NOT_FOUND, "version 7"),
        ({"name": "wrong"}, grpc.StatusCode.INVALID_ARGUMENT, "unknown input 'wrong'"),
        ({"datatype": "FP64", "raw": x.astype(np.float64).tobytes()},
         grpc.StatusCode.INVALID_ARGUMENT, "datatype FP64"),
        ({"shape": [1, 50, 11]}, grpc.StatusCode.INVALID_ARGUMENT, "shape [1, 50, 11]"),
        ({"raw": x.tobytes()[:-4]}, grpc.StatusCode.INVALID_ARGUMENT, "2396 bytes"),
        ({"shape": [1025, 50, 12], "raw": bytes(1025 * 50 * 12 * 4)},
         grpc.StatusCode.INVALID_ARGUMENT, "batch size 1025"),
        ({"raw": nan.tobytes()}, grpc.StatusCode.INVALID_ARGUMENT, "NaN/Inf) at index [0, 3, 4]"),
        ({"raw": inf.tobytes()}, grpc.StatusCode.INVALID_ARGUMENT, "NaN/Inf"),
    ]
    before = scrape(metrics_port)
    with grpc.insecure_channel(url, options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for overrides, code, text in cases:
            with pytest.raises(grpc.RpcError) as info:
                stub.ModelInfer(_raw_request(x, **overrides), timeout=10)
            assert info.value.code() == code, overrides
            assert text in (info.value.details() or ""), (overrides, info.value.details())
            ok = stub.ModelInfer(_raw_request(x), timeout=10)  # still serving
            assert ok.outputs[0].name == "rv"
    after = scrape(metrics_port)
    refused = (metric(after, "rtvol_model_request_failures_total")
               - metric(before, "rtvol_model_request_failures_total"))
    assert refused == len(cases)
    assert metric(after, "rtvol_model_request_failures_total", reason="non_finite") >= 2


def test_concurrent_batch_one_requests_equal_one_batch_call(sidecar: tuple[str, int]) -> None:
    url, metrics_port = sidecar
    n = 16
    x = windows(n, seed=5)
    before = metric(scrape(metrics_port), "rtvol_model_batch_size_count")

    async def run() -> tuple[list[np.ndarray], np.ndarray]:
        async with tc_aio.InferenceServerClient(url) as client:
            singles = await asyncio.gather(*(client.infer(MODEL, [make_input(x[i:i + 1])])
                                             for i in range(n)))
            whole = await client.infer(MODEL, [make_input(x)])
        return [r.as_numpy("rv") for r in singles], whole.as_numpy("rv")

    singles, whole = asyncio.run(asyncio.wait_for(run(), 60))
    # same rows, same answer; ONNX Runtime's kernels block differently per batch size, so the
    # last float32 bit may differ (relative 1e-6), never more
    np.testing.assert_allclose(np.concatenate(singles), whole, rtol=1e-6, atol=0)
    batches = metric(scrape(metrics_port), "rtvol_model_batch_size_count") - before
    assert batches < n + 1  # the singles shared batches


@pytest.mark.slow
def test_new_version_is_served_without_dropping_requests(tmp_path: Path) -> None:
    export_random(tmp_path, seed=1)
    proc = Sidecar(tmp_path, ["--poll-seconds", "0.2"])
    try:
        wait_ready(proc.url)
        client = tc.InferenceServerClient(proc.url)
        stop, failures, done = threading.Event(), [], [0]

        def hammer() -> None:
            c = tc.InferenceServerClient(proc.url)
            while not stop.is_set():
                try:
                    c.infer(MODEL, [make_input(windows(2))])
                    done[0] += 1
                except InferenceServerException as e:
                    failures.append(str(e))

        thread = threading.Thread(target=hammer)
        thread.start()
        try:
            assert export_random(tmp_path, seed=2) == 2
            deadline = time.monotonic() + 30
            while client.get_model_metadata(MODEL, as_json=True)["versions"] != ["2"]:
                assert time.monotonic() < deadline, "version 2 was not picked up"
                time.sleep(0.1)
            served = done[0]
            while done[0] < served + 5 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            stop.set()
            thread.join(30)
        assert not failures
        x = windows(3, seed=9)
        got = client.infer(MODEL, [make_input(x)]).as_numpy("rv")
        np.testing.assert_allclose(got, reference(tmp_path, x)["rv"], atol=1e-6, rtol=0)
    finally:
        assert proc.stop() == 0


def test_a_tampered_version_is_refused_and_the_served_one_stays(tmp_path: Path) -> None:
    repo, staging = tmp_path / "repo", tmp_path / "staging"
    export_random(repo, seed=1)
    export_random(staging, seed=1)
    export_random(staging, seed=2)  # version 2, tampered before it appears in the served repository
    with (version_dir(staging, MODEL, 2) / "model.onnx").open("ab") as f:
        f.write(b"\0")
    metrics_port = free_port()
    proc = Sidecar(repo, ["--poll-seconds", "0.1"], metrics_port=metrics_port)
    try:
        wait_ready(proc.url)
        client = tc.InferenceServerClient(proc.url)
        version_dir(staging, MODEL, 2).rename(repo / MODEL / "2")
        deadline = time.monotonic() + 20
        while not metric(scrape(metrics_port), "rtvol_model_refused_total", reason="digest_mismatch"):
            assert time.monotonic() < deadline, "the tampered version was not refused"
            time.sleep(0.1)
        time.sleep(0.5)  # five more polls: refused once, logged once
        assert metric(scrape(metrics_port), "rtvol_model_refused_total", model=MODEL,
                      reason="digest_mismatch") == 1
        assert client.get_model_metadata(MODEL, as_json=True)["versions"] == ["1"]
        x = windows(2)
        np.testing.assert_allclose(client.infer(MODEL, [make_input(x)]).as_numpy("rv"),
                                   _onnx(repo, 1, x), atol=1e-6)
        assert sum("refusing rtvol_cnn version 2" in line for line in proc.output) == 1
        assert export_random(repo, seed=3) == 3  # a sound newer version is still taken
        while client.get_model_metadata(MODEL, as_json=True)["versions"] != ["3"]:
            assert time.monotonic() < deadline + 20, "version 3 was not picked up"
            time.sleep(0.1)
    finally:
        assert proc.stop() == 0


def _onnx(repo: Path, version: int, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(version_dir(repo, MODEL, version) / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["rv"], {"window": x})[0])
