"""A real NVIDIA tritonserver for tests: the binary, its Python backend and shared libraries
from PyPI's nvidia-pytriton wheel, unpacked by `make tritonserver` under build/tritonserver
(the wheel itself cannot be installed here: it pins numpy<2 and an older tritonclient).

PyPI's build has no onnxruntime backend, so the model runs in the Python backend
(triton_onnx_model.py as the version's model.py, running that version's model.onnx);
everything else is our exported repository as it is: the version folder with its extra
files, and config.pbtxt as exported but for its platform line (backend: "python" instead).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from rtvol.localproc import Proc, free_port, http_ready
from rtvol.repository import CONFIG_FILE, models, resolve
from rtvol.training.export import SERVING

HOME = Path(os.environ.get("RTVOL_TRITONSERVER_DIR", "build/tritonserver")).resolve()
BINARY = HOME / "bin" / "tritonserver"
STUB = HOME / "backends" / "python" / "triton_python_backend_stub"
PYTHON_MODEL = Path(__file__).with_name("triton_onnx_model.py")
ONNX_PLATFORM = SERVING.platform  # what `rtvol export` writes: Triton's ONNX Runtime backend


def unusable() -> str:
    """Why the unpacked tritonserver cannot run here ('' when it can)."""
    if not BINARY.exists():
        return f"{BINARY} missing: run `make tritonserver`"
    env = {**os.environ, "LD_LIBRARY_PATH": str(HOME / "lib")}
    for exe in (BINARY, STUB):
        libs = subprocess.run(["ldd", str(exe)], capture_output=True, text=True, env=env, timeout=30)
        if missing := [line.strip() for line in libs.stdout.splitlines() if "not found" in line]:
            return f"{exe.name} cannot load {missing} (the stub needs libpython of this Python)"
    return ""


def python_backend_repo(src: Path, dest: Path) -> list[str]:
    """Copy the latest version of every model of ``src`` into ``dest`` for the Python backend,
    with a half-written version beside it as `write_version` leaves one while it works (a
    dot-named folder, which Triton must ignore); returns the models' names."""
    names = models(src)
    for name in names:
        version = resolve(src, name)
        shutil.copytree(src / name / str(version), dest / name / str(version))
        shutil.copyfile(PYTHON_MODEL, dest / name / str(version) / "model.py")
        (dest / name / f".{version + 1}-staging").mkdir()
        exported = (src / name / CONFIG_FILE).read_text()
        platform = f'platform: "{ONNX_PLATFORM}"\n'
        assert exported.count(platform) == 1, exported
        (dest / name / CONFIG_FILE).write_text(exported.replace(platform, 'backend: "python"\n'))
    return names


def tritonserver(log_dir: Path, repo: Path) -> tuple[Proc, str]:
    """tritonserver on free loopback ports, ready once /v2/health/ready says so (every model
    loaded); returns (process, gRPC target). The Python stub finds this venv's packages
    (numpy, onnxruntime) through the `python3` first on PATH, as PyTriton arranges it."""
    http, grpc_port = free_port(), free_port()
    env = [f"PATH={Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           f"LD_LIBRARY_PATH={HOME / 'lib'}"]
    cmd = ["env", *env, str(BINARY), f"--model-repository={repo}",
           f"--backend-directory={HOME / 'backends'}", "--disable-auto-complete-config",
           "--http-address=127.0.0.1", f"--http-port={http}",
           "--grpc-address=127.0.0.1", f"--grpc-port={grpc_port}",
           "--allow-metrics=false", "--exit-timeout-secs=5"]
    proc = Proc("tritonserver", cmd, log_dir / "tritonserver.log",
                http_ready(f"http://127.0.0.1:{http}/v2/health/ready"), timeout_s=60)
    return proc, f"127.0.0.1:{grpc_port}"
