"""Unpack tritonserver from PyPI's nvidia-pytriton wheel (`make tritonserver`):

    OUT/bin/tritonserver
    OUT/backends/python/   libtriton_python.so, triton_python_backend_utils.py and the stub
                           built for the Python running this script
    OUT/lib/               the wheel's shared libraries (tritonserver's RPATH has $ORIGIN/../lib)

Usage: python scripts/unpack_tritonserver.py WHEEL OUT
"""

from __future__ import annotations

import stat
import sys
import zipfile
from pathlib import Path

SERVER = "pytriton/tritonserver/"


def destination(member: str, stub_dir: str) -> str | None:
    """Where a wheel member goes under OUT, or None for what the tests do not need."""
    if member.endswith("/"):
        return None
    if member.startswith(SERVER + "bin/") or member.startswith(SERVER + "backends/python/"):
        return member.removeprefix(SERVER)
    if member.startswith(stub_dir):
        return "backends/python/" + member.removeprefix(stub_dir)
    if member.startswith("nvidia_pytriton.libs/") and "libpython" not in member:
        return "lib/" + member.removeprefix("nvidia_pytriton.libs/")  # libpython: the 3.13 stub's
    return None


def unpack(wheel: Path, out: Path) -> None:
    stub_dir = f"{SERVER}python_backend_stubs/{sys.version_info[0]}.{sys.version_info[1]}/"
    with zipfile.ZipFile(wheel) as z:
        if not any(m.startswith(stub_dir) for m in z.namelist()):
            raise SystemExit(f"{wheel.name} has no Python backend stub for Python "
                             f"{sys.version_info[0]}.{sys.version_info[1]}")
        for member in z.namelist():
            if (rel := destination(member, stub_dir)) is None:
                continue
            target = out / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(z.read(member))
            if rel.startswith("bin/") or rel.endswith("_stub"):
                target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


if __name__ == "__main__":
    unpack(Path(sys.argv[1]), Path(sys.argv[2]))
