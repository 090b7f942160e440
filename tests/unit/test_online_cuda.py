"""Choosing the online state's device: a clear error for what cannot run (the numbers on
the GPU: test_online_parity.py and test_online_limits.py run on both devices)."""

from __future__ import annotations

import re

import pytest

from rtvol.features.online import OnlineState
from rtvol.features.online_cuda import online_state
from rtvol.features.triton_kernels import available


def test_cpu_is_the_numpy_state() -> None:
    assert type(online_state(3)) is OnlineState


def test_an_unknown_device_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="'tpu'"):
        online_state(3, device="tpu")


@pytest.mark.skipif(not available(), reason="the GPU path can run here")
def test_cuda_without_a_gpu_says_why() -> None:
    with pytest.raises(RuntimeError, match="cannot run on the GPU: " + re.escape(available())):
        online_state(3, device="cuda")
