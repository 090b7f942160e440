"""rtvol/shm.py: the keys a sidecar maps, the gateway's slots, the sweep of killed gateways' objects."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rtvol import shm
from rtvol.errors import InvalidInput


@pytest.mark.parametrize("key", ["/rtvol-gateway-1-ab", "plain.name_1", "/a"])
def test_a_key_names_a_file_directly_in_the_directory(tmp_path: Path, key: str) -> None:
    assert shm.key_path(tmp_path, key) == tmp_path / key.lstrip("/")


@pytest.mark.parametrize("key", ["", "/", "../x", "/a/b", "a/..", ".hidden", "a\x00b", "x" * 201, "//a"])
def test_a_key_that_could_leave_the_directory_is_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(InvalidInput) as e:
        shm.key_path(tmp_path, key)
    assert e.value.reason == "key"


def test_slots_hold_what_was_written_until_released(tmp_path: Path) -> None:
    slots = shm.Slots(tmp_path, 4 * 4096, count=4)
    x = np.arange(1000, dtype=np.float32).reshape(10, 100)
    held = [slots.write(x + i) for i in range(4)]
    assert sorted(held) == [0, 1, 2, 3] and slots.write(x) is None  # every slot held: in the request
    data = slots.path.read_bytes()
    for i, slot in enumerate(held):
        start = slot * slots.slot_bytes
        got = np.frombuffer(data[start:start + x.nbytes], np.float32).reshape(x.shape)
        np.testing.assert_array_equal(got, x + i)
    slots.release(held[2])
    assert slots.write(x) == held[2]
    assert slots.write(np.zeros(slots.slot_bytes + 4, np.uint8)) is None  # too big for a slot
    slots.close()
    assert not slots.path.exists()


def test_a_region_that_does_not_fit_fails_at_creation_not_at_a_later_write(tmp_path: Path) -> None:
    """A size-limited tmpfs (a pod's memory volume) refuses the region up front (ENOSPC), where
    a sparse file would take the gateway down with SIGBUS at the first write past its room."""
    if not Path("/dev/shm").is_dir() or os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        with pytest.raises(OSError):
            shm.Slots(mnt, 4 << 20)
        assert not list(mnt.iterdir())  # nothing left behind
        shm.Slots(mnt, 512 << 10).close()  # one that fits
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_the_sweep_removes_dead_gateways_objects_only(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    stale = tmp_path / f"{shm.GATEWAY_PREFIX}{dead.stdout.strip()}-0001"
    live = tmp_path / f"{shm.GATEWAY_PREFIX}{os.getppid()}-0002"
    other = tmp_path / "someone-elses"
    for p in (stale, live, other):
        p.write_bytes(b"x")
    slots = shm.Slots(tmp_path, 4096)  # sweeps as it starts
    assert not stale.exists() and live.exists() and other.exists() and slots.path.exists()
    slots.close()


def test_a_local_stack_gets_a_private_directory_removed_after(tmp_path: Path) -> None:
    path = shm.local_dir(tmp_path)
    assert path.is_dir() and path.stat().st_mode & 0o777 == 0o700
    assert shm.local_dir(tmp_path) == path  # the same for the sidecar and the gateway
    (path / "left-by-a-killed-gateway").write_bytes(b"x")
    shm.remove_local_dir(tmp_path)
    assert not path.exists()
