"""The online state's devices as a test parameter: 'cuda' is marked gpu and skips, with the
reason, where the Triton kernels cannot run."""

from __future__ import annotations

import pytest

from rtvol.features.triton_kernels import available

STATE_DEVICES = [pytest.param("cpu", id="cpu"),
                 pytest.param("cuda", id="cuda", marks=[pytest.mark.gpu,
                                                        pytest.mark.skipif(bool(available()),
                                                                           reason=available() or "ok")])]
device_param = pytest.mark.parametrize("device", STATE_DEVICES)
