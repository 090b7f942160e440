"""`rtvol export`: re-validate a version's ONNX, and build a TensorRT engine from it offline.

The engine is written beside the ONNX as model.plan with model.plan.json naming its
precision; the sidecar's TensorRT backend deserialises exactly that file at start. It is
never built on the request path. An INT8 engine is calibrated on real feature windows
(IInt8EntropyCalibrator2), 512 by default, drawn from the training data.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from rtvol import repository

PLAN_FILE = "model.plan"  # services/model/backends/tensorrt_engine.py reads these two names
PLAN_INFO_FILE = "model.plan.json"
CALIBRATION_WINDOWS = 512
CALIBRATION_BATCH = 64
NOT_INSTALLED = "TensorRT is not installed: pip install '.[gpu]' on a machine with an NVIDIA GPU"


class ExportError(RuntimeError):
    """The version cannot be served as it is, or the engine could not be built."""


def max_batch_size(repo: Path, name: str) -> int:
    """From config.pbtxt, read as text: our `inference` protos must not be imported here
    (tests import this module beside tritonclient, which registers the same symbols)."""
    path = Path(repo) / name / repository.CONFIG_FILE
    try:
        found = re.search(r"^max_batch_size:\s*(\d+)", path.read_text(), re.MULTILINE)
    except OSError as e:
        raise ExportError(f"{path}: {e}") from e
    if found is None or int(found.group(1)) < 1:
        raise ExportError(f"{path}: no max_batch_size >= 1 (the sidecar serves batched models)")
    return int(found.group(1))


def validate_onnx(onnx_path: Path, max_batch: int, seed: int = 0) -> dict[str, Any]:
    """ONNX Runtime loads the graph, batch 1 and batch max_batch both run, every output is
    finite, and a row's answer does not depend on the batch it is in."""
    try:
        session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises its own exception types for a corrupt graph
        raise ExportError(f"{onnx_path}: ONNX Runtime cannot load it: {e}") from e
    inp = session.get_inputs()[0]
    dims = [int(d) for d in inp.shape[1:]]
    x = np.random.default_rng(seed).lognormal(-6, 1, size=(max_batch, *dims)).astype(np.float32)
    try:
        whole = session.run(None, {inp.name: x})
        single = session.run(None, {inp.name: x[:1]})
    except Exception as e:
        raise ExportError(f"{onnx_path}: inference failed at batch 1 or {max_batch} "
                          f"(is the batch axis dynamic?): {e}") from e
    names = [o.name for o in session.get_outputs()]
    for name, out, one in zip(names, whole, single, strict=True):
        if out.shape[0] != max_batch or not np.isfinite(out).all():
            raise ExportError(f"{onnx_path}: output '{name}' has shape {out.shape} or non-finite values")
        if not np.allclose(one[0], out[0], rtol=1e-4, atol=1e-6):
            raise ExportError(f"{onnx_path}: output '{name}' of row 0 changes with the batch size")
    return {"input": inp.name, "dims": dims, "outputs": names, "max_batch_size": max_batch}


def calibration_windows(data_dir: Path, n: int = CALIBRATION_WINDOWS, seed: int = 0) -> np.ndarray:
    """``n`` feature windows of the training split, drawn without replacement."""
    from rtvol.training import dataset

    windows = dataset.load(Path(data_dir), progress=False).windows
    pick = np.random.default_rng(seed).choice(len(windows), size=min(n, len(windows)), replace=False)
    return np.ascontiguousarray(windows[np.sort(pick)], dtype=np.float32)


def _batches(windows: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(windows) - size + 1, size):  # the calibrator's batch size is fixed
        yield windows[start:start + size]


def _tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError as e:
        raise ExportError(NOT_INSTALLED) from e
    return tensorrt


def build_engine(onnx_path: Path, info: dict[str, Any], int8: bool,
                 calibration: np.ndarray | None) -> dict[str, Any]:
    """Serialise an fp16 (or INT8 with fp16 fallback) engine with one optimisation profile
    over batch 1..max_batch_size; returns what model.plan.json records."""
    trt = _tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    dims, top = tuple(info["dims"]), int(info["max_batch_size"])
    profile = builder.create_optimization_profile()
    profile.set_shape(info["input"], (1, *dims), (min(64, top), *dims), (top, *dims))
    config.add_optimization_profile(profile)
    calibrator = None
    if int8:
        if calibration is None or len(calibration) < CALIBRATION_BATCH:
            raise ExportError(f"INT8 needs at least {CALIBRATION_BATCH} calibration windows")
        from rtvol.training.tensorrt_calibrator import make_calibrator

        calibrator = make_calibrator(trt, _batches(calibration, CALIBRATION_BATCH), CALIBRATION_BATCH,
                                     onnx_path.with_suffix(".calib"))
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = calibrator
        config.set_calibration_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ExportError("TensorRT could not build the engine (see its log above)")
    (onnx_path.parent / PLAN_FILE).write_bytes(bytes(plan))
    return {"precision": "int8" if int8 else "fp16", "tensorrt": trt.__version__,
            "max_batch_size": top, "calibration_windows": 0 if calibration is None else len(calibration)}


def run(repo: Path, name: str, version: int | None, tensorrt: bool, int8: bool,
        calibration_data: Path | None) -> str:
    """The one-line summary `rtvol export` prints."""
    if tensorrt:
        _tensorrt()  # fail before minutes of validation and calibration-window loading
    try:
        v = repository.resolve(repo, name, version)
    except repository.RepositoryError as e:
        raise ExportError(str(e)) from e
    vdir = repository.version_dir(repo, name, v)
    sealed = _check_sealed(repo, name, v)
    info = validate_onnx(vdir / repository.MODEL_FILE, max_batch_size(repo, name))
    summary = f"{name} version {v}: ONNX valid (batch 1..{info['max_batch_size']}, finite outputs)"
    if not tensorrt:
        if sealed:
            return f"{summary}; files match their digests"
        digests = repository.seal(repo, name, v)
        return f"{summary}; digests of {len(digests)} files recorded in {repository.METADATA_FILE}"
    calibration = None
    if int8:
        if calibration_data is None:
            raise ExportError("--int8 needs --calibration-data DIR (or RTVOL_DATA): training windows")
        calibration = calibration_windows(calibration_data)
    built = build_engine(vdir / repository.MODEL_FILE, info, int8, calibration)
    (vdir / PLAN_INFO_FILE).write_text(json.dumps(built, indent=2) + "\n")
    repository.seal(repo, name, v)  # the engine is served only once its digest is recorded
    return f"{summary}; {built['precision']} TensorRT engine written to {vdir / PLAN_FILE}"


def _check_sealed(repo: Path, name: str, version: int) -> bool:
    """True when the version records digests and its files match them; a version written
    before digests existed is False (export seals it); a tampered one is an ExportError
    (sealing it would bless the tampering)."""
    try:
        repository.verify(repo, name, version)
    except repository.IntegrityError as e:
        if e.reason == "no_digest":
            return False
        raise ExportError(f"{e} - refusing to export a version that changed since it was written") from e
    return True
