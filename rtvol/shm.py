"""System shared memory between the gateway and a sidecar on the same host (Triton's
extension of the Open Inference Protocol): the gateway writes a batch of windows into a
region of a shared-memory object and the request names the region instead of carrying the
bytes. A 500-window batch is 1.2 MB; over Python gRPC that costs ~3 ms a call on the 2-core
VM against ~0.2 ms for the request without it (docs/BENCHMARKS.md).

Objects live in one directory both processes see (/dev/shm, or a memory-backed volume both
containers of a pod mount); a key names a file directly in it and nothing else."""

from __future__ import annotations

import hashlib
import mmap
import os
import re
import secrets
import shutil
from pathlib import Path

import numpy as np

from rtvol.errors import InvalidInput

DEFAULT_DIR = Path("/dev/shm")
# Tensor parameters that name a region instead of raw contents (Triton's names).
REGION_PARAM = "shared_memory_region"
OFFSET_PARAM = "shared_memory_offset"
BYTE_SIZE_PARAM = "shared_memory_byte_size"
GATEWAY_PREFIX = "rtvol-gateway-"
_KEY = re.compile(r"/?([A-Za-z0-9_][A-Za-z0-9._-]{0,199})")


def key_path(directory: Path, key: str) -> Path:
    """The file ``key`` names: "/name" (shm_open's form) or "name", directly in ``directory``."""
    m = _KEY.fullmatch(key)
    if m is None:
        raise InvalidInput(f"shared memory key {key!r}: expected a name of letters, digits, '.', '_' "
                           "or '-' (one optional leading '/'), at most 200 characters", "key")
    return directory / m.group(1)


class Slots:
    """A region the gateway writes windows into: ``count`` slots of ``slot_bytes``, each held
    by one request from its write until its answer (the sidecar reads it until then)."""

    def __init__(self, directory: Path, total_bytes: int, count: int = 4) -> None:
        sweep_dead_gateways(directory)
        self.key = f"/{GATEWAY_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        self.name = self.key[1:]
        self.path = key_path(directory, self.key)
        self.slot_bytes = total_bytes // count // 64 * 64
        self.byte_size = self.slot_bytes * count
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            # the pages now, not at the first write: a full tmpfs (a pod's size-limited memory
            # volume) is ENOSPC here, where ftruncate's sparse file would fault (SIGBUS) later
            os.posix_fallocate(fd, 0, self.byte_size)
            self._map = mmap.mmap(fd, self.byte_size)
        except BaseException:
            os.unlink(self.path)
            raise
        finally:
            os.close(fd)
        self.free = list(range(count))

    def write(self, x: np.ndarray) -> int | None:
        """A held slot holding ``x`` (its offset is ``slot * slot_bytes``), or None when ``x``
        does not fit or every slot is held (the caller sends the bytes in the request)."""
        if x.nbytes > self.slot_bytes or not self.free:
            return None
        slot = self.free.pop()
        start = slot * self.slot_bytes
        np.frombuffer(self._map, np.uint8, x.nbytes, start)[:] = x.view(np.uint8).reshape(-1)
        return slot

    def release(self, slot: int) -> None:
        self.free.append(slot)

    def close(self) -> None:
        self.path.unlink(missing_ok=True)
        self._map.close()


def local_dir(run_dir: Path, create: bool = True) -> Path:
    """A private directory for one local stack's objects: in /dev/shm (memory) where there is
    one, else beside the stack's other files. The sidecar maps nothing outside it."""
    tag = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:12]
    path = DEFAULT_DIR / f"rtvol-{tag}" if DEFAULT_DIR.is_dir() else run_dir / "shm"
    if create:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def remove_local_dir(run_dir: Path) -> None:
    """After the stack stopped: what a killed gateway left, and the directory."""
    shutil.rmtree(local_dir(run_dir, create=False), ignore_errors=True)


def sweep_dead_gateways(directory: Path) -> None:
    """Remove the objects of gateway processes that no longer run (killed before their close):
    the pid is in the name, and every gateway of a host (or pod) shares its pid namespace."""
    for path in directory.glob(f"{GATEWAY_PREFIX}*"):
        pid = path.name.removeprefix(GATEWAY_PREFIX).split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            path.unlink(missing_ok=True)
        except PermissionError:  # someone else's process: alive
            pass
