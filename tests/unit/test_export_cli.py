"""`rtvol export`: ONNX re-validation and the TensorRT paths (built only on a GPU machine)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rtvol import cli
from rtvol.repository import version_dir, write_version
from rtvol.training.cnn import OUTPUTS, VolCNN
from rtvol.training.export import SERVING, to_onnx
from rtvol.training.tensorrt_export import NOT_INSTALLED, PLAN_FILE, PLAN_INFO_FILE

MODEL = "rtvol_cnn"
HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("models")
    write_version(path, MODEL, to_onnx(VolCNN()), {}, SERVING)
    return path


def test_revalidates_the_latest_onnx(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["export", "--repo", str(repo)]) == 0
    assert "version 1: ONNX valid (batch 1..1024" in capsys.readouterr().out


def test_a_broken_onnx_is_refused(repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_version(tmp_path, MODEL, (version_dir(repo, MODEL) / "model.onnx").read_bytes()[:-300], {},
                  SERVING)
    assert cli.main(["export", "--repo", str(tmp_path)]) == 2
    assert "ONNX Runtime cannot load it" in capsys.readouterr().err


def test_unknown_version_is_a_clear_error(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["export", "--repo", str(repo), "--version", "9"]) == 2
    assert "9" in capsys.readouterr().err


@pytest.mark.skipif(HAS_TENSORRT, reason="tensorrt is installed here: the build test covers it")
@pytest.mark.parametrize("flags", [["--tensorrt"], ["--int8"]])
def test_tensorrt_missing_exits_2_with_the_install_hint(repo: Path, flags: list[str],
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["export", "--repo", str(repo), *flags]) == 2
    assert NOT_INSTALLED in capsys.readouterr().err
    assert not (version_dir(repo, MODEL) / PLAN_FILE).exists()


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_TENSORRT or not torch.cuda.is_available(),
                    reason="needs tensorrt and a CUDA GPU (pip install '.[gpu]')")
def test_fp16_engine_is_what_the_sidecar_loads(repo: Path) -> None:
    from rtvol.services.model import backends

    assert cli.main(["export", "--repo", str(repo), "--tensorrt"]) == 0
    vdir = version_dir(repo, MODEL)
    assert json.loads((vdir / PLAN_INFO_FILE).read_text())["precision"] == "fp16"
    files = backends.ModelFiles(vdir, "window", OUTPUTS, 1024)
    engine = backends.create("tensorrt", files)
    engine.warmup(backends.batch_buckets(1024))
    reference = backends.create("onnxruntime-cpu", files)
    x = np.random.default_rng(1).lognormal(-6, 1, size=(7, 50, 12)).astype(np.float32)
    want = {k: v.copy() for k, v in reference.infer(x).items()}
    got = engine.infer(x)
    for out in OUTPUTS:
        np.testing.assert_allclose(got[out], want[out], rtol=1e-2, atol=1e-5, err_msg=out)


def test_compile_refuses_an_unknown_precision(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["export", "--repo", str(repo), "--compile", "--precision", "fp16,int4"]) == 2
    assert "--precision int4: choose from fp16,bf16,fp32" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is here: --compile would build")
def test_compile_without_a_gpu_is_a_clear_error(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["export", "--repo", str(repo), "--compile"]) == 2
    assert "torch sees no CUDA device" in capsys.readouterr().err
    assert not (version_dir(repo, MODEL) / "compiled").exists()


def test_export_seals_an_unsealed_version_and_refuses_a_tampered_one(
        repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_version(tmp_path, MODEL, (version_dir(repo, MODEL) / "model.onnx").read_bytes(), {}, SERVING)
    meta_path = version_dir(tmp_path, MODEL) / "metadata.json"
    meta = json.loads(meta_path.read_text())
    del meta["files"]  # a version written before digests existed
    meta_path.write_text(json.dumps(meta))
    assert cli.main(["export", "--repo", str(tmp_path)]) == 0
    assert "digests of 1 files recorded" in capsys.readouterr().out
    assert cli.main(["export", "--repo", str(tmp_path)]) == 0
    assert "files match their digests" in capsys.readouterr().out
    with (version_dir(tmp_path, MODEL) / "model.onnx").open("ab") as f:
        f.write(b"\0")
    assert cli.main(["export", "--repo", str(tmp_path)]) == 2
    assert "digest_mismatch" not in (err := capsys.readouterr().err) and "sha256 differs" in err
