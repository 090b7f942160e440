"""System shared memory (Triton's extension) against the real sidecar process: the official
tritonclient registers and infers through it; the gateway's client sends big batches through
it and registers again after the sidecar restarts; hostile registrations and references are
refused with the field named, and the sidecar lives on."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

tc = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is the acceptance client")
from helpers.models import export_random  # noqa: E402
from test_sidecar_grpc import wait_ready, windows  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from rtvol import shm  # noqa: E402
from rtvol.loadtest.bench.launch import Sidecar  # noqa: E402
from rtvol.training.cnn import OUTPUTS  # noqa: E402

pytestmark = pytest.mark.integration
MODEL = "rtvol_cnn"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models")
    export_random(path, seed=5)
    return path


@pytest.fixture(scope="module")
def shm_dir() -> Iterator[Path]:
    base = shm.DEFAULT_DIR if shm.DEFAULT_DIR.is_dir() else None
    path = Path(tempfile.mkdtemp(prefix="rtvol-test-shm-", dir=base))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def sidecar(repo: Path, shm_dir: Path) -> Iterator[str]:
    proc = Sidecar(repo, ["--shm-dir", str(shm_dir)])
    try:
        wait_ready(proc.url)
        yield proc.url
    finally:
        assert proc.stop() == 0


def write_object(directory: Path, name: str, data: bytes) -> None:
    fd = os.open(directory / name, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def raw_outputs(client: tc.InferenceServerClient, x: np.ndarray) -> dict[str, np.ndarray]:
    inp = tc.InferInput("window", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer(MODEL, [inp])
    return {k: result.as_numpy(k) for k in OUTPUTS}


def test_official_client_infers_through_a_registered_region(sidecar: str, shm_dir: Path) -> None:
    client = tc.InferenceServerClient(sidecar)
    assert "system_shared_memory" in client.get_server_metadata().extensions
    x = windows(300, seed=1)
    offset = 4096  # a region need not start the object, nor the tensor the region
    write_object(shm_dir, "tc-region", bytes(offset) + bytes(64) + x.tobytes())
    client.register_system_shared_memory("tc", "/tc-region", 64 + x.nbytes, offset=offset)
    try:
        status = client.get_system_shared_memory_status("tc")
        assert status.regions["tc"].key == "/tc-region" and status.regions["tc"].byte_size == 64 + x.nbytes
        inp = tc.InferInput("window", list(x.shape), "FP32")
        inp.set_shared_memory("tc", x.nbytes, offset=64)
        result = client.infer(MODEL, [inp])
        expected = raw_outputs(client, x)
        for name in OUTPUTS:  # the same rows through the same backend: equal, bit for bit
            np.testing.assert_array_equal(result.as_numpy(name), expected[name])
    finally:
        client.unregister_system_shared_memory("tc")
    with pytest.raises(InferenceServerException, match="not registered"):
        client.infer(MODEL, [inp])


@pytest.mark.parametrize(("key", "size", "offset", "code", "field"), [
    ("../etc/passwd", 64, 0, grpc.StatusCode.INVALID_ARGUMENT, "key"),
    ("/sub/dir", 64, 0, grpc.StatusCode.INVALID_ARGUMENT, "key"),
    ("/no-such-object", 64, 0, grpc.StatusCode.NOT_FOUND, "no such object"),
    ("/small", 1 << 20, 0, grpc.StatusCode.INVALID_ARGUMENT, "beyond"),
    ("/small", 64, 2**62, grpc.StatusCode.INVALID_ARGUMENT, "beyond"),
    ("/link", 64, 0, grpc.StatusCode.INVALID_ARGUMENT, "cannot open"),
    ("/small", 0, 0, grpc.StatusCode.INVALID_ARGUMENT, "byte_size"),
])
def test_hostile_registrations_are_refused_naming_the_field(sidecar: str, shm_dir: Path, key: str, size: int,
                                                            offset: int, code: grpc.StatusCode,
                                                            field: str) -> None:
    write_object(shm_dir, "small", bytes(4096))
    if not (shm_dir / "link").exists():
        os.symlink("/etc/hostname", shm_dir / "link")  # a link out of the directory is never followed

    client = tc.InferenceServerClient(sidecar)
    with pytest.raises(InferenceServerException) as e:
        client.register_system_shared_memory("hostile", key, size, offset=offset)
    assert e.value.status() == f"StatusCode.{code.name}" and field in e.value.message()
    assert client.is_server_live()


def test_hostile_references_are_refused_naming_the_field(sidecar: str, shm_dir: Path) -> None:
    client = tc.InferenceServerClient(sidecar)
    x = windows(4)
    bad = x.copy()
    bad[1, 2, 3] = np.nan
    write_object(shm_dir, "refs", x.tobytes() + bad.tobytes())
    client.register_system_shared_memory("refs", "/refs", 2 * x.nbytes)
    try:
        cases = [(x.nbytes, 2 * x.nbytes, "shared_memory_offset"),  # past the region's end
                 (x.nbytes - 4, 0, "shared_memory_byte_size"),  # not the tensor's size
                 (x.nbytes, x.nbytes, "non-finite")]  # NaN in the region is refused as in a request
        for size, offset, field in cases:
            inp = tc.InferInput("window", list(x.shape), "FP32")
            inp.set_shared_memory("refs", size, offset=offset)
            with pytest.raises(InferenceServerException, match=field):
                client.infer(MODEL, [inp])
        inp = tc.InferInput("window", list(x.shape), "FP32")
        inp.set_shared_memory("nobody", x.nbytes)
        with pytest.raises(InferenceServerException, match="not registered"):
            client.infer(MODEL, [inp])
    finally:
        client.unregister_system_shared_memory("refs")
    assert client.is_server_live()


def test_a_sidecar_without_shm_dir_says_how_to_turn_it_on(repo: Path) -> None:
    proc = Sidecar(repo)
    try:
        wait_ready(proc.url)
        client = tc.InferenceServerClient(proc.url)
        assert "system_shared_memory" not in client.get_server_metadata().extensions
        with pytest.raises(InferenceServerException, match="--shm-dir"):
            client.register_system_shared_memory("r", "/r", 64)
        inp = tc.InferInput("window", [1, 50, 12], "FP32")
        inp.set_shared_memory("r", 2400)
        with pytest.raises(InferenceServerException, match="--shm-dir"):
            client.infer(MODEL, [inp])
    finally:
        assert proc.stop() == 0


def test_gateway_client_sends_big_batches_through_shared_memory_across_a_restart(
        repo: Path, shm_dir: Path) -> None:
    """Big batches go through the region, small ones in the request, answers equal either way;
    the slots are free after each answer (a burst beyond four slots sends the rest in requests);
    a restarted sidecar on the same port gets the region registered again on the next big call;
    the object is removed when the client closes. In its own process: tests/helpers/shm_client.py."""
    tests = Path(__file__).parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests.parent), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "helpers.shm_client", str(repo), str(shm_dir)], cwd=tests,
                          capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["big_equal"] and seen["small_equal"] and seen["after_restart_equal"]
    assert (seen["big_via_shm"], seen["small_via_shm"]) == (1, 0)
    assert seen["free_after"] == seen["free_after_burst"] == [0, 1, 2, 3]
    assert seen["burst_answers"] == 6 and 1 <= seen["burst_via_shm"] <= 6
    assert seen["first_stop"] == 0 and seen["after_restart_via_shm"] >= 1
    assert seen["object_removed"]
