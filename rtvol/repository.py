"""Model repository in Triton's layout, so a stock Triton server can serve it too.

    <repo>/<model>/config.pbtxt
    <repo>/<model>/<version>/model.onnx
    <repo>/<model>/<version>/metadata.json   feature-spec hash, normalisation, metrics, ...
    <repo>/<model>/<version>/<extra files>    e.g. baselines/, model.plan (TensorRT)

A version directory appears atomically (written under a temporary name, then renamed), so
a server watching the repository never sees a half-written model. metadata.json records
the sha256 of every other file of its version ("files"); the sidecar serves a version only
when the folder holds exactly those files with those digests (`verify`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_MODEL = "rtvol_cnn"
MODEL_FILE = "model.onnx"
METADATA_FILE = "metadata.json"
CONFIG_FILE = "config.pbtxt"
DIGESTS = "files"  # metadata.json key: relative path -> sha256 of each other file of the version


class RepositoryError(LookupError):
    """A model or version that is not in the repository, or a malformed entry."""


class IntegrityError(RepositoryError):
    """A version's files differ from the digests its metadata records; ``reason`` is a metric label."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dims: tuple[int, ...]  # without the batch dimension
    dtype: str = "TYPE_FP32"


@dataclass(frozen=True)
class ServingConfig:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int = 1024
    preferred_batch_sizes: tuple[int, ...] = (64, 256, 1024)
    max_queue_delay_microseconds: int = 100
    platform: str = "onnxruntime_onnx"
    extra: dict[str, Any] = field(default_factory=dict)


def render_config(name: str, cfg: ServingConfig) -> str:
    """config.pbtxt in Triton's text format."""
    def tensors(kind: str, specs: tuple[TensorSpec, ...]) -> str:
        body = ",\n".join(
            f'  {{\n    name: "{t.name}"\n    data_type: {t.dtype}\n'
            f'    dims: [ {", ".join(str(d) for d in t.dims)} ]\n  }}' for t in specs)
        return f"{kind} [\n{body}\n]\n"

    preferred = ", ".join(str(b) for b in cfg.preferred_batch_sizes)
    return (f'name: "{name}"\nplatform: "{cfg.platform}"\nmax_batch_size: {cfg.max_batch_size}\n'
            + tensors("input", cfg.inputs) + tensors("output", cfg.outputs)
            + "dynamic_batching {\n"
            f"  preferred_batch_size: [ {preferred} ]\n"
            f"  max_queue_delay_microseconds: {cfg.max_queue_delay_microseconds}\n}}\n"
            "version_policy: { latest: { num_versions: 1 } }\n")


def versions(repo: Path, name: str) -> list[int]:
    """Complete versions of a model, ascending (a version needs model.onnx and metadata)."""
    folder = Path(repo) / name
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        if p.name.isdigit() and (p / MODEL_FILE).is_file() and (p / METADATA_FILE).is_file():
            found.append(int(p.name))
    return sorted(found)


def models(repo: Path) -> list[str]:
    repo = Path(repo)
    if not repo.is_dir():
        return []
    return sorted(p.name for p in repo.iterdir() if p.is_dir() and versions(repo, p.name))


def resolve(repo: Path, name: str, version: int | None = None) -> int:
    """The requested version, or the latest one; RepositoryError when absent."""
    available = versions(repo, name)
    if not available:
        raise RepositoryError(f"model '{name}' not found in repository {repo}")
    if version is None:
        return available[-1]
    if version not in available:
        raise RepositoryError(f"model '{name}' has no version {version} (has {available})")
    return version


def version_dir(repo: Path, name: str, version: int | None = None) -> Path:
    return Path(repo) / name / str(resolve(repo, name, version))


def read_metadata(repo: Path, name: str, version: int | None = None) -> dict[str, Any]:
    path = version_dir(repo, name, version) / METADATA_FILE
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise RepositoryError(f"{path}: not valid JSON ({e})") from e
    return data


def validation_rmspe(repo: Path, name: str, version: int) -> float | None:
    """The validation RMSPE training recorded for a version (an ensemble's own figure, else the
    best epoch's); None when the version or the figure is missing."""
    try:
        meta = read_metadata(repo, name, version)
    except (RepositoryError, OSError):
        return None
    figure = meta.get("ensemble", {}).get("val_rmspe", {}).get("ensemble",
                                                               meta.get("training", {}).get("best_val_rmspe"))
    return float(figure) if isinstance(figure, int | float) else None


def write_version(repo: Path, name: str, onnx_model: bytes, metadata: dict[str, Any],
                  serving: ServingConfig, extra_files: dict[str, Path] | None = None) -> int:
    """Add the next version of ``name``; returns its number."""
    model_dir = Path(repo) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    existing = [int(p.name) for p in model_dir.iterdir() if p.name.isdigit()]
    version = max(existing, default=0) + 1
    staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=model_dir))
    try:
        (staging / MODEL_FILE).write_bytes(onnx_model)
        for rel, src in (extra_files or {}).items():
            dest = staging / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
        meta = {**metadata, "model": name, "version": version, DIGESTS: file_digests(staging)}
        (staging / METADATA_FILE).write_text(_dump(meta))
        write_atomic(model_dir / CONFIG_FILE, render_config(name, serving))
        # mkdtemp makes it 0700: servers reading the repository under another uid (a
        # container's, a mounted volume without fsGroup) need to list and read it
        staging.chmod(0o755)
        os.rename(staging, model_dir / str(version))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return version


def file_digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under a version folder but its metadata.json, by relative path."""
    return {p.relative_to(folder).as_posix(): _sha256(p)
            for p in sorted(Path(folder).rglob("*")) if p.is_file() and p.name != METADATA_FILE}


def seal(repo: Path, name: str, version: int) -> dict[str, str]:
    """Record the current files of a version in its metadata (after `rtvol export` adds one)."""
    folder = version_dir(repo, name, version)
    meta = read_metadata(repo, name, version)
    meta[DIGESTS] = file_digests(folder)
    # the temporary file goes beside the version, not in it: a concurrent verify sees no extra file
    write_atomic(folder / METADATA_FILE, _dump(meta), folder.parent / f".{version}-{METADATA_FILE}.tmp")
    return dict(meta[DIGESTS])


def verify(repo: Path, name: str, version: int) -> None:
    """IntegrityError unless the version folder holds exactly the files its metadata records,
    each with its recorded sha256 (a swapped, added or removed file is refused)."""
    folder = version_dir(repo, name, version)
    recorded = read_metadata(repo, name, version).get(DIGESTS)
    if not isinstance(recorded, dict) or not recorded:
        raise IntegrityError(f"{folder}: no file digests in {METADATA_FILE} (rtvol export seals it)",
                             "no_digest")
    found = file_digests(folder)
    if missing := sorted(set(recorded) - set(found)):
        raise IntegrityError(f"{folder}: recorded files missing: {missing}", "missing_file")
    if extra := sorted(set(found) - set(recorded)):
        raise IntegrityError(f"{folder}: files not in the recorded digests: {extra}", "unexpected_file")
    if changed := sorted(f for f, digest in found.items() if recorded[f] != digest):
        raise IntegrityError(f"{folder}: sha256 differs from the recorded digest: {changed}",
                             "digest_mismatch")


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _dump(meta: dict[str, Any]) -> str:
    return json.dumps(meta, indent=2, sort_keys=True) + "\n"


def write_atomic(path: Path, text: str, tmp: Path | None = None) -> None:
    tmp = tmp or path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
