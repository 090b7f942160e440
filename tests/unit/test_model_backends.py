"""Sidecar backends and dynamic batcher, in process (no protos: tritonclient's own
`inference.*` protos may share this pytest process)."""

from __future__ import annotations

import asyncio

import numpy as np
import onnx
import pytest
import torch
from helpers.models import random_model_files
from helpers.parity import assert_half_close, output_scale, reference, windows

from rtvol.errors import Unavailable
from rtvol.services.model import backends
from rtvol.services.model.backends import BackendUnavailable, ModelFiles
from rtvol.services.model.backends.torch_onnx import TorchGraph
from rtvol.services.model.batcher import Batcher
from rtvol.training.cnn import OUTPUTS

MAX_BATCH = 64


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> ModelFiles:
    """A randomly initialised VolCNN (non-trivial weights) exported into a repository."""
    return random_model_files(tmp_path_factory.mktemp("repo"), 1, "m", MAX_BATCH)


# fp16 only: CPU kernels round bf16 differently from cuBLAS/cuDNN (bf16 is checked on the GPU,
# where it is served); fp16 convolutions on the CPU match what the GPU computes closely.
@pytest.mark.parametrize("conv_matmul", [False, True], ids=["conv", "conv-as-gemm"])
def test_torch_graph_half_precision_convolutions_on_cpu(files: ModelFiles, conv_matmul: bool) -> None:
    """The GPU backends' precision policy (convolutions in fp16, the rest fp32) and their
    convolution-as-GEMM lowering, on the CPU."""
    graph = TorchGraph(onnx.load(str(files.onnx)), conv_dtype=torch.float16, conv_matmul=conv_matmul)
    scale = output_scale(files)
    for n in (1, 7, MAX_BATCH):
        x = windows(n, seed=n)
        want = reference(files, x)
        got = dict(zip(graph.output_names, graph(torch.from_numpy(x)), strict=True))
        for name in OUTPUTS:
            assert got[name].dtype == torch.float32
            assert_half_close(got[name].numpy(), want[name], scale[name], f"{name} (n={n})")


@pytest.mark.parametrize("conv_matmul", [False, True], ids=["conv", "conv-as-gemm"])
def test_torch_graph_matches_onnxruntime_on_cpu(files: ModelFiles, conv_matmul: bool) -> None:
    """The ONNX->torch interpreter behind the CUDA-graph backend, checked where it can run."""
    graph = TorchGraph(onnx.load(str(files.onnx)), conv_matmul=conv_matmul)
    x = windows(9)
    want = reference(files, x)
    got = dict(zip(graph.output_names, graph(torch.from_numpy(x)), strict=True))
    for name in OUTPUTS:
        np.testing.assert_allclose(got[name].numpy(), want[name], atol=1e-4, rtol=0)


BACKENDS = [
    pytest.param("onnxruntime-cpu", "fp32", id="onnxruntime-cpu"),
    pytest.param("onnxruntime", "fp32", id="onnxruntime-best-provider"),
    pytest.param("cudagraph-eager", "fp32", id="cudagraph-eager-fp32", marks=pytest.mark.gpu),
    pytest.param("cudagraph-eager", "fp16", id="cudagraph-eager-fp16", marks=pytest.mark.gpu),
    pytest.param("cudagraph", "fp32", id="cudagraph-fp32", marks=pytest.mark.gpu),
    pytest.param("cudagraph", "fp16", id="cudagraph-fp16", marks=pytest.mark.gpu),
    pytest.param("cudagraph", "bf16", id="cudagraph-bf16", marks=pytest.mark.gpu),
    pytest.param("tensorrt", "fp16", id="tensorrt", marks=pytest.mark.gpu),
]


@pytest.mark.parametrize(("name", "precision"), BACKENDS)
def test_backend_parity_with_onnxruntime_fp32(files: ModelFiles, name: str, precision: str) -> None:
    try:
        backend = backends.create(name, files, precision=precision)
    except BackendUnavailable as e:
        pytest.skip(f"{name} unavailable here: {e}")
    backend.warmup(backends.batch_buckets(MAX_BATCH))
    scale = output_scale(files)
    for n in (1, 7, MAX_BATCH):
        x = windows(n, seed=n)
        want = reference(files, x)
        got = {k: v.copy() for k, v in backend.infer(x).items()}
        for out in OUTPUTS:
            assert got[out].shape == want[out].shape
            if precision == "fp32":
                np.testing.assert_allclose(got[out], want[out], atol=1e-4, rtol=0, err_msg=out)
            else:
                assert_half_close(got[out], want[out], scale[out], f"{out} (n={n})")


def test_batch_buckets() -> None:
    assert backends.batch_buckets(1024) == (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
    assert backends.batch_buckets(48) == (1, 2, 4, 8, 16, 32, 48)


class Recording:
    """A real backend that also records the batch sizes it was called with."""

    def __init__(self, inner: backends.Backend) -> None:
        self.inner, self.name = inner, "recording"
        self.calls: list[int] = []

    def infer(self, window: np.ndarray) -> dict[str, np.ndarray]:
        self.calls.append(window.shape[0])
        return self.inner.infer(window)

    def warmup(self, buckets: object) -> None:
        pass


@pytest.mark.parametrize("threaded", [False, True])
async def test_concurrent_requests_coalesce_and_get_their_own_rows(files: ModelFiles,
                                                                   threaded: bool) -> None:
    from concurrent.futures import ThreadPoolExecutor

    backend = Recording(backends.create("onnxruntime-cpu", files))
    executor = ThreadPoolExecutor(1) if threaded else None
    batcher = Batcher("m", backend, (50, 12), MAX_BATCH, 5e-3, executor)
    await batcher.infer(windows(1))  # computed alone (a quiet model): now traffic flows
    backend.calls.clear()
    sizes = [1, 3, 1, 2, 5, 1, 1, 4]
    xs = [windows(n, seed=i) for i, n in enumerate(sizes)]
    results = await asyncio.wait_for(asyncio.gather(*(batcher.infer(x) for x in xs)), 10)
    whole = reference(files, np.concatenate(xs))
    offset = 0
    for n, got in zip(sizes, results, strict=True):
        for out in OUTPUTS:
            np.testing.assert_array_equal(got[out], whole[out][offset:offset + n])
        offset += n
    assert sum(backend.calls) == sum(sizes)
    assert len(backend.calls) < len(sizes)  # they shared batches
    await batcher.close()
    if executor:
        executor.shutdown()


async def test_a_batch_is_concatenated_straight_into_the_backends_input_buffer(files: ModelFiles) -> None:
    """A GPU backend's pinned input: the batch lands there, and no second copy is needed."""
    class WithBuffer(Recording):
        def __init__(self, inner: backends.Backend) -> None:
            super().__init__(inner)
            self.input_buffer = np.full((MAX_BATCH, 50, 12), np.nan, np.float32)
            self.in_buffer: list[bool] = []

        def infer(self, window: np.ndarray) -> dict[str, np.ndarray]:
            self.in_buffer.append(np.shares_memory(window, self.input_buffer))
            return super().infer(window)

    backend = WithBuffer(backends.create("onnxruntime-cpu", files))
    batcher = Batcher("m", backend, (50, 12), MAX_BATCH, 5e-3, None)
    await batcher.infer(windows(1))  # computed alone (a quiet model): now traffic flows
    xs = [windows(n, seed=i) for i, n in enumerate((2, 3, 1))]
    results = await asyncio.wait_for(asyncio.gather(*(batcher.infer(x) for x in xs)), 10)
    assert backend.calls == [1, 6] and backend.in_buffer == [False, True]
    np.testing.assert_array_equal(backend.input_buffer[:6], np.concatenate(xs))
    whole = reference(files, np.concatenate(xs))["rv"]
    np.testing.assert_array_equal(np.concatenate([got["rv"] for got in results]), whole)
    await batcher.close()


async def test_batches_never_exceed_max_batch_size(files: ModelFiles) -> None:
    backend = Recording(backends.create("onnxruntime-cpu", files))
    batcher = Batcher("m", backend, (50, 12), MAX_BATCH, 5e-3, None)
    xs = [windows(40, seed=i) for i in range(3)]
    results = await asyncio.wait_for(asyncio.gather(*(batcher.infer(x) for x in xs)), 10)
    assert backend.calls == [40, 40, 40]
    for x, got in zip(xs, results, strict=True):
        np.testing.assert_array_equal(got["rv"], reference(files, x)["rv"])
    await batcher.close()


async def test_closed_batcher_finishes_queued_work_and_refuses_new(files: ModelFiles) -> None:
    batcher = Batcher("m", backends.create("onnxruntime-cpu", files), (50, 12), MAX_BATCH, 1e-3, None)
    queued = asyncio.ensure_future(batcher.infer(windows(2)))
    await asyncio.sleep(0)  # queued before the close
    await asyncio.wait_for(batcher.close(), 10)
    assert (await queued)["rv"].shape == (2, 1)
    with pytest.raises(Unavailable):
        await batcher.infer(windows(1))


async def test_backend_failure_reaches_every_request_of_the_batch(files: ModelFiles) -> None:
    class Broken(Recording):
        def infer(self, window: np.ndarray) -> dict[str, np.ndarray]:
            raise RuntimeError("device lost")

    batcher = Batcher("m", Broken(backends.create("onnxruntime-cpu", files)), (50, 12), MAX_BATCH,
                      1e-3, None)
    outcomes = await asyncio.gather(*(batcher.infer(windows(1)) for _ in range(3)),
                                    return_exceptions=True)
    assert all(isinstance(o, RuntimeError) for o in outcomes)
    await batcher.close()



class Slow(Recording):
    """Records when each batch ran."""

    def __init__(self, inner: backends.Backend) -> None:
        super().__init__(inner)
        self.started: list[float] = []

    def infer(self, window: np.ndarray) -> dict[str, np.ndarray]:
        import time

        self.started.append(time.perf_counter())
        return super().infer(window)


@pytest.mark.parametrize("idle_dispatch", [True, False])
async def test_a_lone_request_on_a_quiet_model_waits_only_without_idle_dispatch(
        files: ModelFiles, idle_dispatch: bool) -> None:
    import time

    backend = Slow(backends.create("onnxruntime-cpu", files))
    delay = 0.2
    batcher = Batcher("m", backend, (50, 12), MAX_BATCH, delay, None, idle_dispatch=idle_dispatch)
    sent = time.perf_counter()
    await asyncio.wait_for(batcher.infer(windows(1)), 10)
    waited = backend.started[0] - sent
    assert (waited < delay / 2) if idle_dispatch else (waited >= delay * 0.95)
    # traffic is flowing now (a batch just finished): the next requests wait for company
    first = asyncio.ensure_future(batcher.infer(windows(1)))
    await asyncio.sleep(0.01)
    second = asyncio.ensure_future(batcher.infer(windows(2)))
    await asyncio.wait_for(asyncio.gather(first, second), 10)
    assert backend.calls[-1] == 3
    await batcher.close()


async def test_a_lone_request_on_a_quiet_model_is_answered_in_its_callers_turn(files: ModelFiles) -> None:
    """No hop to the batcher's task and back: the future is done when submit returns. Right
    after it traffic flows, and the next requests queue to share a batch."""
    backend = Recording(backends.create("onnxruntime-cpu", files))
    batcher = Batcher("m", backend, (50, 12), MAX_BATCH, 0.05, None)
    x = windows(2, seed=3)
    alone = batcher.submit(x)
    assert alone.done() and backend.calls == [2]
    np.testing.assert_array_equal(alone.result()["rv"], reference(files, x)["rv"])
    queued = [batcher.submit(windows(1, seed=i)) for i in range(3)]
    assert not any(f.done() for f in queued)
    await asyncio.wait_for(asyncio.gather(*queued), 10)
    assert backend.calls == [2, 3]
    await batcher.close()


async def test_a_request_too_big_for_the_loop_or_beside_a_batch_is_never_computed_inline(
        files: ModelFiles) -> None:
    from concurrent.futures import ThreadPoolExecutor

    backend = Recording(backends.create("onnxruntime-cpu", files))
    executor = ThreadPoolExecutor(1)
    batcher = Batcher("m", backend, (50, 12), MAX_BATCH, 0.0, executor, inline_max_rows=4)
    big = batcher.submit(windows(5))  # for the backend's thread, on the batcher's turn
    assert not big.done()
    await asyncio.sleep(0)  # the batch of 5 is now computing on the thread
    beside = batcher.submit(windows(1))
    assert not beside.done() and batcher.computing
    await asyncio.wait_for(asyncio.gather(big, beside), 10)
    assert backend.calls == [5, 1]
    await batcher.close()
    executor.shutdown()


@pytest.mark.gpu
def test_cuda_graph_replays_on_its_own_stream_not_behind_the_callers(files: ModelFiles) -> None:
    """A served replay never queues behind other work on the caller's stream (the default
    one, where a shadow version's or anyone's kernels may be): the default stream is kept
    busy with a long kernel while the backend answers, right, and well before it ends."""
    try:
        backend = backends.create("cudagraph", files, precision="fp16")
    except BackendUnavailable as e:
        pytest.skip(f"cudagraph unavailable here: {e}")
    backend.warmup(backends.batch_buckets(MAX_BATCH))
    x = windows(7, seed=3)
    want = {k: v.copy() for k, v in backend.infer(x).items()}
    caller = torch.cuda.current_stream()
    torch.cuda._sleep(2_000_000_000)  # about a second of GPU time on the caller's stream
    got = {k: v.copy() for k, v in backend.infer(x).items()}
    busy = not caller.query()  # the long kernel is still running: infer did not wait for it
    caller.synchronize()
    assert busy, "the backend waited for the caller's stream"
    assert torch.cuda.current_stream() == caller  # the caller's stream is restored
    for out in OUTPUTS:
        np.testing.assert_array_equal(got[out], want[out], err_msg=out)
