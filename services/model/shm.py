"""The sidecar's registered system shared-memory regions (Triton's extension): a region maps
part of an object in ``--shm-dir`` read-only; an input tensor that names it is read from there.

Bounded (``max_regions``, ``max_bytes``): a registration beyond them first forgets regions whose
object is gone (a gateway killed before it unregistered; its sweep removed the file), then is
refused. Only files directly in the directory, opened without following links, are mapped.
A region's object must not shrink while mapped (the reader would fault): only the gateway
that created it writes it, and it never truncates."""

from __future__ import annotations

import mmap
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rtvol.errors import InvalidInput, NotFound, ResourceExhausted
from rtvol.proto.inference import grpc_service_pb2 as pb
from rtvol.shm import BYTE_SIZE_PARAM, OFFSET_PARAM, REGION_PARAM, key_path


@dataclass(frozen=True, slots=True)
class Region:
    name: str
    key: str
    offset: int
    byte_size: int
    path: Path
    inode: tuple[int, int]  # (st_dev, st_ino): the object it was registered on
    view: memoryview  # byte_size bytes from offset (it keeps the mapping alive)

    def exists(self) -> bool:
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self.inode


class Regions:
    def __init__(self, directory: Path, max_regions: int = 256, max_bytes: int = 1 << 30) -> None:
        self.directory = directory
        self.max_regions, self.max_bytes = max_regions, max_bytes
        self.by_name: dict[str, Region] = {}

    def register(self, request: pb.SystemSharedMemoryRegisterRequest) -> None:
        name, key, offset, size = request.name, request.key, request.offset, request.byte_size
        if not name:
            raise InvalidInput("shared memory region: empty name", "name")
        if size == 0:
            raise InvalidInput(f"shared memory region '{name}': byte_size 0", "byte_size")
        path = key_path(self.directory, key)
        old = self.by_name.get(name)
        if old is not None:
            if (old.key, old.offset, old.byte_size) == (key, offset, size) and old.exists():
                return  # the same registration again (a client re-registers on each new stream)
            raise InvalidInput(f"shared memory region '{name}' is already registered (key {old.key!r})",
                               "name")
        self._make_room(size)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise NotFound(f"shared memory key {key!r}: no such object in {self.directory}") from None
        except OSError as e:
            raise InvalidInput(f"shared memory key {key!r}: cannot open ({e.strerror})", "key") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise InvalidInput(f"shared memory key {key!r}: not a regular file", "key")
            if offset + size > st.st_size:
                raise InvalidInput(f"shared memory region '{name}': offset {offset} + byte_size {size} "
                                   f"beyond the object's {st.st_size} bytes", "byte_size")
            m = mmap.mmap(fd, offset + size, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
        self.by_name[name] = Region(name, key, offset, size, path, (st.st_dev, st.st_ino),
                                    memoryview(m)[offset:offset + size])

    def _make_room(self, size: int) -> None:
        def full() -> bool:
            used = sum(r.byte_size for r in self.by_name.values())
            return len(self.by_name) >= self.max_regions or used + size > self.max_bytes
        if full():
            for r in [r for r in self.by_name.values() if not r.exists()]:
                self.unregister(r.name)
        if full():
            raise ResourceExhausted(f"shared memory: {len(self.by_name)} regions registered "
                                    f"(at most {self.max_regions}, {self.max_bytes} bytes); unregister some")

    def unregister(self, name: str) -> None:
        """``name`` ('' : every region); an unknown name is not an error (Triton's rule). The
        mapping goes with its last reader (an array of a request still queued keeps it)."""
        for n in list(self.by_name) if not name else [name]:
            self.by_name.pop(n, None)

    def status(self, name: str) -> pb.SystemSharedMemoryStatusResponse:
        if name and name not in self.by_name:
            raise NotFound(f"shared memory region '{name}' is not registered")
        reply = pb.SystemSharedMemoryStatusResponse()
        for r in self.by_name.values():
            if not name or r.name == name:
                reply.regions[r.name].CopyFrom(pb.SystemSharedMemoryStatusResponse.RegionStatus(
                    name=r.name, key=r.key, offset=r.offset, byte_size=r.byte_size))
        return reply

    def read(self, tensor: pb.ModelInferRequest.InferInputTensor, dtype: np.dtype, want: int) -> np.ndarray:
        """The ``want`` bytes the tensor's parameters name, as a read-only array (no copy)."""
        params = tensor.parameters
        name = params[REGION_PARAM].string_param
        region = self.by_name.get(name)
        if region is None:
            raise InvalidInput(f"input '{tensor.name}': shared memory region '{name}' is not registered",
                               REGION_PARAM)
        offset = params[OFFSET_PARAM].int64_param if OFFSET_PARAM in params else 0
        size = params[BYTE_SIZE_PARAM].int64_param if BYTE_SIZE_PARAM in params else want
        if size != want:
            raise InvalidInput(f"input '{tensor.name}': {BYTE_SIZE_PARAM} {size}, expected {want}",
                               BYTE_SIZE_PARAM)
        if not 0 <= offset <= region.byte_size - want:
            raise InvalidInput(f"input '{tensor.name}': {OFFSET_PARAM} {offset} + {want} bytes outside "
                               f"region '{name}' ({region.byte_size} bytes)", OFFSET_PARAM)
        return np.frombuffer(region.view, dtype, want // dtype.itemsize, offset)
