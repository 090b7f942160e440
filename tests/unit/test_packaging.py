"""What `pip install` puts into site-packages, and generated stubs in step with protos/."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "rtvol", "services", "training", "loadtest")


def _wheel(tmp_path: Path, leave_out: tuple[str, ...] = ()) -> zipfile.ZipFile:
    """Build the distribution's wheel from a copy of the sources (links kept as links)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        if name in leave_out:
            continue
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path / "dist"), str(src)], check=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("rtvol-*.whl")
    return zipfile.ZipFile(wheel)


@pytest.mark.slow
def test_wheel_installs_only_the_rtvol_package(tmp_path: Path) -> None:
    names = set(_wheel(tmp_path).namelist())
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"rtvol"}
    for module in ("rtvol/services/gateway/main.py", "rtvol/services/model/backends/onnxrt.py",
                   "rtvol/training/train.py", "rtvol/loadtest/bench/gateway.py", "rtvol/ingest_codec.py",
                   "rtvol/proto/v1/features_pb2.py"):
        assert module in names
    harnesses = [n for n in names if n.startswith("rtvol/services/")
                 and Path(n).stem.startswith(("bench", "echo", "launch"))]
    assert harnesses == []


@pytest.mark.slow
def test_image_wheel_leaves_the_load_tooling_out(tmp_path: Path) -> None:
    """The images copy no loadtest/ (.dockerignore): the wheel still builds, without it, and
    `rtvol bench` installed from it says so in one line."""
    wheel = _wheel(tmp_path, leave_out=("loadtest",))
    names = set(wheel.namelist())
    assert "rtvol/services/gateway/main.py" in names
    assert not [n for n in names if n.startswith("rtvol/loadtest/")]
    site = tmp_path / "site"
    wheel.extractall(site)
    # -S and the dependencies on PYTHONPATH: no .pth file runs, so no editable install of this
    # checkout can lend the image its rtvol.loadtest
    path = os.pathsep.join([str(site), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    out = subprocess.run([sys.executable, "-S", "-m", "rtvol.cli", "bench", "gateway"], cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": path}, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr == ("rtvol: error: `rtvol bench` needs rtvol.loadtest, which is not installed here "
                          "(the container images carry the services only): run it from a source checkout\n")


def test_generated_grpc_stubs_match_protos(tmp_path: Path) -> None:
    """`make protos` output, regenerated here, equals the committed rtvol/proto."""
    protos = sorted(str(p.relative_to(ROOT / "protos")) for p in (ROOT / "protos").rglob("*.proto"))
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'protos'}",
                    f"--python_out={tmp_path}", f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}",
                    *protos], check=True, timeout=120)
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    committed = sorted(p.relative_to(ROOT) for p in (ROOT / "rtvol" / "proto").rglob("*_pb2*")
                       if p.suffix in (".py", ".pyi"))
    assert generated == committed, "run `make protos` and commit rtvol/proto"
    stale = [str(p) for p in generated if not filecmp.cmp(tmp_path / p, ROOT / p, shallow=False)]
    assert stale == [], "run `make protos` and commit rtvol/proto"
