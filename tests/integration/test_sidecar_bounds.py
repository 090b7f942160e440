"""The sidecar's batch queue is bounded (issue 16: one ModelStreamInfer client sending 200
batches of 1,024 rows took its RSS from 387 MB to 1,245 MB, and it stayed there)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from helpers import procs

# tritonclient's copy of the inference protos, as tests/integration/test_sidecar_grpc.py: the
# two copies share the proto package 'inference', and only one can come first in a process
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from rtvol.features.spec import N_FEATURES, STEPS

pytestmark = pytest.mark.integration
MAX_ROWS = 1024  # the tiny model's max_batch_size


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _request(x: np.ndarray, i: int) -> pb.ModelInferRequest:
    r = pb.ModelInferRequest(model_name="rtvol_cnn", id=str(i), raw_input_contents=[x.tobytes()])
    r.inputs.add(name="window", datatype="FP32", shape=x.shape)
    return r


def test_one_stream_flooding_big_batches_is_refused_not_queued(tiny_repo: Path, tmp_path: Path) -> None:
    # a slow backend (as a stalled GPU): the queue fills within a few batches
    sidecar, target = procs.sidecar(tmp_path, tiny_repo, "--debug-delay-ms", "100")
    try:
        x = np.random.default_rng(0).normal(size=(MAX_ROWS, STEPS, N_FEATURES)).astype("<f4")
        with grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 64 << 20),
                                                    ("grpc.max_receive_message_length", 64 << 20)]) as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            stub.ModelInfer(_request(x[:1], -1), timeout=30)  # warm: the baseline includes a batch
            before = rss_mb(sidecar.pid)
            peak = [before]
            done = threading.Event()

            def sample() -> None:
                while not done.wait(0.02):
                    peak.append(rss_mb(sidecar.pid))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()

            def flood() -> Iterator[pb.ModelInferRequest]:
                for i in range(200):
                    yield _request(x, i)

            try:
                replies = list(stub.ModelStreamInfer(flood(), timeout=120))
            finally:
                done.set()
                sampler.join(5)
            refused = [r for r in replies if "queue full" in r.error_message]
            answered = [r for r in replies if not r.error_message]
            growth = max(peak) - before
            print(f"\nsidecar RSS {before:.0f} MB -> peak {max(peak):.0f} MB; "
                  f"{len(answered)} answered, {len(refused)} refused (queue full)")
            # unbounded, the 200 x 2.4 MB requests all wait in the queue (+970 MB measured);
            # bounded: the 64 MiB queue, the batch computing, gRPC's buffers and the allocator's
            # arenas (+167 to +256 MB measured on the 2-core VM, depending on thread timing)
            assert growth < 400, f"RSS grew {growth:.0f} MB"
            assert len(replies) == 200 and len(refused) + len(answered) == 200, \
                {r.error_message for r in replies}
            assert refused and answered  # the bound was reached, and what fit was computed
            # the stream (and the sidecar) go on serving
            reply = stub.ModelInfer(_request(x[:2], 0), timeout=30)
            assert reply.outputs[0].shape == [2, 1]
    finally:
        assert sidecar.stop() == 0, sidecar.tail()
