"""Compile once at `rtvol export --compile`; at start, reuse those kernels instead of compiling.

TorchInductor compiling the CUDA-graph backend's model at every sidecar start took 26-28 s
on an H200. `rtvol export --compile` runs that same compile once (every batch bucket, in the
order the sidecar warms them up) and stores TorchInductor's portable cache of it (the
"mega-cache": torch.compiler.save_cache_artifacts, holding the Dynamo, AOTAutograd and
Inductor entries with their Triton kernels as cubins) beside model.onnx:

    <version>/compiled/<key digest>/key.json       what it was built for (machine_key)
    <version>/compiled/<key digest>/inductor.bin   the cache artifacts

The key names the GPU (name, compute capability), the torch, Triton and CUDA versions, the
precision and the ONNX file's digest: a cache built for another machine or model is never
loaded. At start the sidecar loads a matching cache into TorchInductor's local cache, then
torch.compile traces the model and finds each kernel there instead of compiling it; where
none matches or it cannot be loaded, it compiles as before, logged and counted
(rtvol_model_compile_fallbacks_total{model, reason}). A cache entry that misses (say, the
graph code changed without a new key) compiles that graph only: slower, never wrong.

AOTInductor packages were tried first (2026-12-01): on the H200 image (torch 2.11) a CUDA
package segfaulted when loaded, even a two-layer toy, so they are not used.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch

from rtvol.services.model import metrics

log = logging.getLogger(__name__)

FORMAT = "2"  # 1: AOTInductor packages
DIR = "compiled"
KEY_FILE = "key.json"
CACHE_FILE = "inductor.bin"
STORED, COMPILED = "stored compile cache", "compiled at start"


class ArtifactUnusable(RuntimeError):
    """No stored cache fits this machine and model; ``reason`` is a metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "none"


def machine_key(device: torch.device, precision: str, onnx_path: Path) -> dict[str, str]:
    """Everything the compiled kernels depend on, as strings."""
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


def _differences(want: dict[str, str], have: dict[str, str]) -> str:
    return ", ".join(f"{k}={have.get(k)!r} (this machine {want[k]!r})"
                     for k in sorted(want) if have.get(k) != want[k]) or "none"


def forget(version_dir: Path, key: dict[str, str]) -> None:
    """Drop the stored cache for ``key`` (export rebuilds it from a clean compile)."""
    shutil.rmtree(Path(version_dir) / DIR / digest(key), ignore_errors=True)


def save(version_dir: Path, key: dict[str, str]) -> Path:
    """Store what this process compiled; the folder appears complete or not at all."""
    artifacts = torch.compiler.save_cache_artifacts()
    if artifacts is None:
        raise RuntimeError("TorchInductor recorded nothing to store: was the model compiled in this process?")
    folder = Path(version_dir) / DIR
    folder.mkdir(exist_ok=True)
    final = folder / digest(key)
    work = Path(tempfile.mkdtemp(dir=folder, prefix=".building-"))
    try:
        (work / CACHE_FILE).write_bytes(artifacts[0])
        (work / KEY_FILE).write_text(json.dumps(key, indent=2, sort_keys=True) + "\n")
        shutil.rmtree(final, ignore_errors=True)
        work.rename(final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


def load(version_dir: Path, key: dict[str, str]) -> Path:
    """Load the cache stored for ``key`` into TorchInductor's local cache; its folder, or
    ArtifactUnusable saying why not."""
    folder = Path(version_dir) / DIR
    found = folder / digest(key)
    if not (found / KEY_FILE).is_file():
        others = sorted(folder.glob(f"*/{KEY_FILE}")) if folder.is_dir() else []
        if not others:
            raise ArtifactUnusable("missing", f"no stored compile cache in {folder} "
                                              "(`rtvol export --compile` on this kind of GPU builds it)")
        stored = [json.loads(p.read_text()) for p in others]
        raise ArtifactUnusable("mismatch", f"{len(others)} stored compile cache(s) in {folder}, none for "
                                           f"this machine; nearest differs in {_differences(key, stored[0])}")
    stored_key = json.loads((found / KEY_FILE).read_text())
    if stored_key != key:
        raise ArtifactUnusable("mismatch", f"{found}: differs in {_differences(key, stored_key)}")
    try:
        loaded = torch.compiler.load_cache_artifacts((found / CACHE_FILE).read_bytes())
    except Exception as e:  # a damaged or incompatible cache: compiling still serves
        raise ArtifactUnusable("load_failed", f"{found}: {type(e).__name__}: {e}") from e
    if loaded is None:
        raise ArtifactUnusable("load_failed", f"{found}: TorchInductor found no artifacts in {CACHE_FILE}")
    return found


def use_stored(version_dir: Path, key: dict[str, str]) -> str:
    """Before torch.compile: STORED when the matching cache is loaded, else COMPILED with
    the reason logged and counted."""
    started = time.perf_counter()
    try:
        found = load(version_dir, key)
    except ArtifactUnusable as e:
        model = Path(version_dir).parent.name
        metrics.COMPILE_FALLBACKS.labels(model, e.reason).inc()
        log.warning("%s: %s; compiling at start instead (tens of seconds)", model, e)
        return COMPILED
    log.info("%s: compile cache loaded from %s in %.1f s", Path(version_dir).parent.name, found,
             time.perf_counter() - started)
    return STORED


def cache_misses() -> int:
    """Graphs TorchInductor compiled in this process (FX graph cache misses)."""
    from torch._dynamo.utils import counters

    return int(counters["inductor"]["fxgraph_cache_miss"])
