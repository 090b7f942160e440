"""The podman command line for the container end-to-end test: every call bounded, run with
tests/e2e/podman/containers.conf (runc and raised ulimits; crun does not work on this VM,
issue 8)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

CONF = Path(__file__).resolve().parents[1] / "e2e" / "podman" / "containers.conf"


def missing() -> str | None:
    """Why the test cannot run here, or None."""
    for tool in ("podman", "runc", "debootstrap"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (`make podman-e2e` installs podman, runc and debootstrap)"
    if os.geteuid() != 0:
        return "needs rootful podman (run as root)"
    return None


def env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(CONF))}


def podman(*args: str, timeout_s: float = 60, stdin: bytes | None = None,
           check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run podman; stdout/stderr come back as text. ``check``: a non-zero exit raises."""
    raw = subprocess.run(["podman", *args], input=stdin, capture_output=True, timeout=timeout_s, env=env())
    done = subprocess.CompletedProcess(raw.args, raw.returncode, raw.stdout.decode(errors="replace"),
                                       raw.stderr.decode(errors="replace"))
    if check and done.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)}: exit {done.returncode}\n{done.stdout}{done.stderr}")
    return done


def import_volume(name: str, folder: Path, fs_group: int, timeout_s: float = 60) -> None:
    """A fresh named volume holding ``folder``'s files (a persistentVolumeClaim's claimName).

    The files get group ``fs_group`` and group read (and search on folders): what the kubelet
    does for a pod's ``fsGroup``, which podman does not implement.
    """
    podman("volume", "rm", "--force", name, check=False)
    podman("volume", "create", name)
    tar = subprocess.run(["tar", "-C", str(folder), f"--group={fs_group}", "--mode=g+rX", "-c", "."],
                         capture_output=True, check=True, timeout=timeout_s)
    podman("volume", "import", name, "-", stdin=tar.stdout, timeout_s=timeout_s)


def logs(containers: list[str], tail: int = 40) -> str:
    out = []
    for name in containers:
        done = podman("logs", "--tail", str(tail), name, check=False, timeout_s=20)
        out.append(f"--- {name} (last {tail} lines)\n{done.stdout}{done.stderr}")
    return "\n".join(out)
