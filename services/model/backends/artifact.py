"""Compile once at `rtvol export --compile`; at start, load instead of compiling.

TorchInductor compiling the CUDA-graph backend's model at every sidecar start took 26-28 s
on an H200. Instead `rtvol export --compile` builds AOTInductor packages (the Triton
kernels as cubins, the wrapper as a shared library) and stores them beside model.onnx:

    <version>/compiled/<key digest>/key.json    what they were built for (machine_key)
    <version>/compiled/<key digest>/batch1.pt2  batch 1, specialised
    <version>/compiled/<key digest>/batchN.pt2  batch 2..max_batch_size, one dynamic axis

The key names the GPU (name, compute capability), the torch, Triton and CUDA versions, the
precision and the ONNX file's digest: code compiled for another machine or model is never
run. A matching package is first loaded by a throwaway child process (probe), so a native
crash in the loader cannot take the sidecar down. Where no package matches or the probe
fails, the backend compiles at start as before; that fallback is logged and counted
(rtvol_model_compile_fallbacks_total{model, reason}).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from rtvol.repository import MODEL_FILE
from rtvol.services.model import metrics
from rtvol.services.model.backends.packed import packed_model

log = logging.getLogger(__name__)

FORMAT = "1"
DIR = "compiled"
KEY_FILE = "key.json"
ONE, MANY = "batch1.pt2", "batchN.pt2"
Forward = Callable[[torch.Tensor], torch.Tensor]


class ArtifactUnusable(RuntimeError):
    """No compiled package fits this machine and model; ``reason`` is a metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "none"


def machine_key(device: torch.device, precision: str, onnx_path: Path) -> dict[str, str]:
    """Everything a compiled package depends on, as strings."""
    key = {"format": FORMAT, "precision": precision, "device": device.type,
           "onnx_sha256": hashlib.sha256(Path(onnx_path).read_bytes()).hexdigest(),
           "torch": torch.__version__}
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        key |= {"gpu": torch.cuda.get_device_name(device), "capability": f"{major}.{minor}",
                "cuda": torch.version.cuda or "none", "triton": _version("triton")}
    else:
        key |= {"cpu": platform.machine()}
    return key


def digest(key: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def build(version_dir: Path, module: torch.nn.Module, input_dims: tuple[int, ...], max_batch: int,
          key: dict[str, str]) -> Path:
    """Export ``module`` (on the device the key names) and compile both packages; the
    folder appears complete or not at all. TorchInductor's defaults: packages built with
    max_autotune crashed the process that loaded them (torch 2.11, H200)."""
    from torch._inductor import aoti_compile_and_package

    folder = Path(version_dir) / DIR
    folder.mkdir(exist_ok=True)
    final = folder / digest(key)
    device = torch.device(key["device"])
    example = torch.rand((4, *input_dims), device=device) * 1e-3
    batch = torch.export.Dim("batch", min=2, max=max_batch)
    work = Path(tempfile.mkdtemp(dir=folder, prefix=".building-"))
    try:
        with torch.no_grad():
            one = torch.export.export(module, (example[:1],))
            many = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
            aoti_compile_and_package(one, package_path=str(work / ONE))
            aoti_compile_and_package(many, package_path=str(work / MANY))
        (work / KEY_FILE).write_text(json.dumps(key, indent=2, sort_keys=True) + "\n")
        if final.exists():
            shutil.rmtree(final)
        work.rename(final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


class AotiForward:
    """The two packages as one callable: batch 1 on its specialised kernels."""

    def __init__(self, one: Forward, many: Forward) -> None:
        self.one, self.many = one, many

    def __call__(self, window: torch.Tensor) -> torch.Tensor:
        run = self.one if window.shape[0] == 1 else self.many
        return run(window)


def _differences(want: dict[str, str], have: dict[str, str]) -> str:
    return ", ".join(f"{k}={have.get(k)!r} (this machine {want[k]!r})"
                     for k in sorted(want) if have.get(k) != want[k]) or "none"


# Load both packages and run them once, in a child process: its exit code is the verdict.
_PROBE = """
import sys, torch
from torch._inductor import aoti_load_package
x = torch.rand((2, *map(int, sys.argv[4:])), device=sys.argv[1])
for path, rows in ((sys.argv[2], 1), (sys.argv[3], 2)):
    assert torch.isfinite(aoti_load_package(path)(x[:rows])).all()
"""


def probe(found: Path, device: str, input_dims: tuple[int, ...], timeout_s: float = 120) -> None:
    """ArtifactUnusable unless a fresh process loads and runs the packages. On the H200
    (torch 2.11) a package loaded in the process that built it, but a fresh process's load
    raised or died with SIGSEGV: this costs a second or two of start and keeps such a
    crash out of the sidecar."""
    cmd = [sys.executable, "-c", _PROBE, device, str(found / ONE), str(found / MANY), *map(str, input_dims)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as e:
        raise ArtifactUnusable("load_failed", f"{found}: loading took over {timeout_s:.0f} s") from e
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise ArtifactUnusable("load_failed",
                               f"{found}: a test load exited with {done.returncode}: {tail[0]}")


def load(version_dir: Path, key: dict[str, str], input_dims: tuple[int, ...]) -> AotiForward:
    """The packages built for ``key``, or ArtifactUnusable saying why not."""
    folder = Path(version_dir) / DIR
    found = folder / digest(key)
    if not (found / KEY_FILE).is_file():
        others = sorted(folder.glob(f"*/{KEY_FILE}")) if folder.is_dir() else []
        if not others:
            raise ArtifactUnusable("missing", f"no compiled packages in {folder} "
                                              "(`rtvol export --compile` on this kind of GPU builds them)")
        stored = [json.loads(p.read_text()) for p in others]
        raise ArtifactUnusable("mismatch", f"{len(others)} compiled package(s) in {folder}, none for "
                                           f"this machine; nearest differs in {_differences(key, stored[0])}")
    stored_key = json.loads((found / KEY_FILE).read_text())
    if stored_key != key:
        raise ArtifactUnusable("mismatch", f"{found}: differs in {_differences(key, stored_key)}")
    probe(found, key["device"], input_dims)
    try:
        from torch._inductor import aoti_load_package

        # single-threaded: no event query between runs, which CUDA graph capture forbids
        return AotiForward(aoti_load_package(str(found / ONE), run_single_threaded=True),
                           aoti_load_package(str(found / MANY), run_single_threaded=True))
    except Exception as e:  # a damaged or incompatible package: compiling still serves
        raise ArtifactUnusable("load_failed", f"{found}: {type(e).__name__}: {e}") from e


def load_or_compile(version_dir: Path, key: dict[str, str], input_dims: tuple[int, ...],
                    compile_now: Callable[[], Forward]) -> tuple[Forward, str]:
    """(forward, 'artifact') from the matching package, else (compile_now(), 'compiled at
    start') with the reason logged and counted."""
    try:
        forward = load(version_dir, key, input_dims)
    except ArtifactUnusable as e:
        model = Path(version_dir).parent.name
        metrics.COMPILE_FALLBACKS.labels(model, e.reason).inc()
        log.warning("%s: %s; compiling at start instead (tens of seconds)", model, e)
        return compile_now(), "compiled at start"
    log.info("%s: compiled packages loaded from %s", Path(version_dir).parent.name,
             Path(version_dir) / DIR / digest(key))
    return forward, "artifact"


def compile_version(version_dir: Path, precision: str, max_batch: int, device: torch.device) -> Path:
    """`rtvol export --compile`: the packages the CUDA-graph backend would load for
    ``precision`` on this machine, built from the version's ONNX."""
    onnx_path = Path(version_dir) / MODEL_FILE
    module = packed_model(onnx_path, device, precision)
    key = machine_key(device, precision, onnx_path)
    return build(version_dir, module, module.input_dims, max_batch, key)
