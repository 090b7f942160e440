"""The online state on a GPU: OnlineState whose every batch is applied by the Triton round kernel.

The state of every stock lives in CUDA tensors (:class:`~rtvol.features.triton_kernels.GpuOnlineState`);
a batch's valid updates are split into rounds (at most one update per stock) exactly as
OnlineState does, one kernel launch per round: a batch that holds each stock at most once,
the usual Ingest message, is one launch. The host arrays stay a mirror that the service's
readers use (publisher, Watch, estimates, checkpoints): after each batch the rows of the
stocks it accepted come back, one device-to-host copy for their small arrays and one for
the ring rows of the stocks whose window moved. Watermarks (``advance``) close
steps on the host and push the rows they touched, like every other writer of the host
arrays (checkpoint recovery) through :meth:`OnlineState.host_written`. Same numbers as
numpy (tests/unit/test_online_limits.py and test_online_parity.py run on both devices on a
GPU host).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from rtvol.features.online import DEFAULT_LIMITS, Limits, OnlineState
from rtvol.features.online_batch import UpdateBatch, check_values
from rtvol.features.triton_kernels import STATE_ARRAYS, GpuOnlineState, available

if TYPE_CHECKING:
    import torch

DEVICES = ("cpu", "cuda")
SMALL = tuple(name for name in STATE_ARRAYS if name != "ring")  # ~160 bytes a stock


class CudaOnlineState(OnlineState):
    def __init__(self, n_stocks: int, limits: Limits = DEFAULT_LIMITS, device: str = "cuda") -> None:
        if why := available():
            raise RuntimeError(f"the feature state cannot run on the GPU: {why}")
        super().__init__(n_stocks, limits)
        self.gpu = GpuOnlineState(n_stocks, device, limits)

    def apply(self, batch: UpdateBatch) -> np.ndarray:
        reason = check_values(batch, self.n_stocks)
        ok = np.flatnonzero(reason == 0)
        if len(ok):
            valid = batch.take(ok)
            reason[ok] = self.gpu.apply(valid)
            self.pull(np.unique(valid.stock_id[reason[ok] == 0]))  # rejected rows change nothing
        return reason

    def advance(self, time: float) -> np.ndarray | None:
        closed = super().advance(time)
        if closed is not None:
            self.host_written(closed)
        return closed

    def pull(self, idx: np.ndarray) -> None:
        """Copy the state of stocks ``idx`` (and the clock) from the device into the host
        arrays: their small arrays first, then the ring rows (2.4 KB a stock, most of the
        bytes) of only those whose window moved."""
        if not len(idx):
            return
        before = self.closed[idx]
        self._copy_rows(idx, SMALL)
        moved = idx[self.closed[idx] != before]
        if len(moved):
            self._copy_rows(moved, ("ring",))

    def _copy_rows(self, idx: np.ndarray, names: tuple[str, ...]) -> None:
        """Rows ``idx`` of arrays ``names`` and the clock, gathered on the device as bytes side
        by side: one device-to-host copy for all of them."""
        import torch

        rows = torch.from_numpy(idx.astype(np.int64)).to(self.gpu.device, non_blocking=True)
        parts = [self._device(name).index_select(0, rows).reshape(len(idx), -1).view(torch.uint8)
                 for name in names]
        parts.append(self.gpu.clock.view(torch.uint8).reshape(1, -1).expand(len(idx), -1))
        packed = torch.cat(parts, dim=1).cpu().numpy()
        start = 0
        for name in names:
            host = getattr(self, name)
            width = host[:1].size * host.itemsize
            block = np.ascontiguousarray(packed[:, start:start + width])
            dtype = np.int8 if host.dtype == bool else host.dtype
            host[idx] = block.view(dtype).reshape(len(idx), *host.shape[1:])
            start += width
        self.clock = float(packed[0, start:].view(np.float64)[0])

    def host_written(self, idx: np.ndarray) -> None:
        """Copy the host rows of stocks ``idx`` (and the clock) to the device."""
        import torch

        rows = torch.from_numpy(np.asarray(idx, np.int64)).to(self.gpu.device)
        for name in STATE_ARRAYS:
            host = getattr(self, name)[idx]
            self._device(name)[rows] = torch.from_numpy(host.astype(np.int8) if host.dtype == bool else host
                                                        ).to(self.gpu.device)
        self.gpu.clock.fill_(self.clock)

    def _device(self, name: str) -> torch.Tensor:
        tensor: torch.Tensor = getattr(self.gpu, name)
        return tensor


def online_state(n_stocks: int, limits: Limits = DEFAULT_LIMITS, device: str = "cpu") -> OnlineState:
    """The feature state on ``device`` ('cpu': numpy, the default; 'cuda': Triton kernels)."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, not {device!r}")
    return OnlineState(n_stocks, limits) if device == "cpu" else CudaOnlineState(n_stocks, limits)
