"""One loaded model version: its Triton config, tensor specs and warmed backend."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from google.protobuf import text_format

from rtvol import repository
from rtvol.proto.inference import model_config_pb2 as mc
from rtvol.services.model.backends import Backend, ModelFiles, batch_buckets

# Triton config enum -> (Open Inference Protocol datatype, numpy dtype)
DATATYPES: dict[int, tuple[str, type[np.generic]]] = {
    mc.TYPE_FP32: ("FP32", np.float32), mc.TYPE_FP16: ("FP16", np.float16),
    mc.TYPE_FP64: ("FP64", np.float64), mc.TYPE_INT32: ("INT32", np.int32),
    mc.TYPE_INT64: ("INT64", np.int64), mc.TYPE_BOOL: ("BOOL", np.bool_),
}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    datatype: str  # "FP32"
    dtype: np.dtype
    dims: tuple[int, ...]  # without the batch dimension


@dataclass
class LoadedModel:
    name: str
    version: int
    config: mc.ModelConfig
    input: TensorInfo
    outputs: tuple[TensorInfo, ...]
    backend: Backend

    @property
    def max_batch_size(self) -> int:
        return int(self.config.max_batch_size)

    @property
    def version_label(self) -> str:
        return str(self.version)


def _info(name: str, data_type: int, dims: list[int]) -> TensorInfo:
    if data_type not in DATATYPES:
        raise repository.RepositoryError(f"tensor {name}: unsupported data type {data_type}")
    label, dtype = DATATYPES[data_type]
    return TensorInfo(name, label, np.dtype(dtype), tuple(int(d) for d in dims))


def read_config(repo: Path, name: str) -> mc.ModelConfig:
    path = Path(repo) / name / repository.CONFIG_FILE
    try:
        # fields of Triton's config that we do not model (e.g. instance_group) are skipped
        return text_format.Parse(path.read_text(), mc.ModelConfig(), allow_unknown_field=True)
    except (OSError, text_format.ParseError) as e:
        raise repository.RepositoryError(f"{path}: {e}") from e


def load(repo: Path, name: str, version: int,
         make_backend: Callable[[ModelFiles], Backend]) -> LoadedModel:
    """Read the config, build the backend and warm it over every batch bucket (slow; call it
    off the event loop)."""
    config = read_config(repo, name)
    if len(config.input) != 1 or config.max_batch_size < 1:
        raise repository.RepositoryError(f"{name}: the sidecar serves batched single-input models")
    inp = _info(config.input[0].name, config.input[0].data_type, list(config.input[0].dims))
    outs = tuple(_info(o.name, o.data_type, list(o.dims)) for o in config.output)
    files = ModelFiles(repository.version_dir(repo, name, version), inp.name,
                       tuple(o.name for o in outs), int(config.max_batch_size))
    backend = make_backend(files)
    backend.warmup(batch_buckets(files.max_batch_size))
    return LoadedModel(name, version, config, inp, outs, backend)
