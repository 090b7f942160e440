"""Run in its own process by tests/integration/test_sidecar_shared_memory.py (the pytest process
holds tritonclient's copy of the inference protos; the gateway's client needs rtvol's): the
gateway's SidecarClient with a shared-memory region against real sidecars, across a restart.
Prints one JSON line of what it saw; exits non-zero on a failed check.

    cd tests && python -m helpers.shm_client REPO SHM_DIR
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import numpy as np

from rtvol import shm
from rtvol.loadtest.bench.launch import Sidecar
from rtvol.services.gateway.metrics import SIDECAR_SHM
from rtvol.services.gateway.sidecar_client import SidecarClient

MODEL = "rtvol_cnn"


def windows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).lognormal(-6, 1, size=(n, 50, 12)).astype(np.float32)


def used() -> float:
    return float(SIDECAR_SHM.labels("shared_memory")._value.get())


async def until_answered(client: SidecarClient, x: np.ndarray) -> dict[str, np.ndarray]:
    for _ in range(200):  # the old stream ends when its connection does: a call or two fail first
        try:
            return (await client.infer(x)).outputs
        except Exception:
            await asyncio.sleep(0.05)
    raise TimeoutError("no answer from the restarted sidecar")


async def scenario(repo: Path, shm_dir: Path, procs: list[Sidecar]) -> dict[str, object]:
    first = procs[0]
    slots = shm.Slots(shm_dir, 8 << 20)
    plain, client = SidecarClient(first.url, MODEL), SidecarClient(first.url, MODEL, slots=slots)
    seen: dict[str, object] = {}
    try:
        await until_answered(plain, windows(1, 0))  # ready
        big, small = windows(500, 2), windows(3, 3)
        for name, x in (("big", big), ("small", small)):
            before = used()
            got, want = (await client.infer(x)).outputs, (await plain.infer(x)).outputs
            seen[f"{name}_equal"] = all(np.array_equal(got[k], want[k]) for k in want)
            seen[f"{name}_via_shm"] = used() - before
        seen["free_after"] = sorted(slots.free)
        before = used()
        answers = await asyncio.gather(*(client.infer(windows(400, s)) for s in range(6)))
        seen["burst_answers"], seen["burst_via_shm"] = len(answers), used() - before
        seen["free_after_burst"] = sorted(slots.free)

        port = first.port
        seen["first_stop"] = first.stop()
        procs.append(Sidecar(repo, ["--shm-dir", str(shm_dir), "--port", str(port)]))
        before = used()
        got = await until_answered(client, big)
        want = await until_answered(plain, big)
        seen["after_restart_equal"] = all(np.array_equal(got[k], want[k]) for k in want)
        seen["after_restart_via_shm"] = used() - before
    finally:
        await client.close()
        await plain.close()
    seen["object_removed"] = not slots.path.exists()
    return seen


def main(repo: Path, shm_dir: Path) -> None:
    procs = [Sidecar(repo, ["--shm-dir", str(shm_dir)])]
    try:
        print(json.dumps(asyncio.run(scenario(repo, shm_dir, procs))), flush=True)
    finally:
        for p in procs:
            p.stop()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
